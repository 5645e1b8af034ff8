// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Synchronization

/// The page allocator's fast path: what `MemorySystem.allocatePages`,
/// `freePages` and `deallocate` inline into the caller. A hit in the calling
/// thread's page list takes no lock and no read-modify-write atomic; it
/// reads the published free-page count (a plain load) to keep the `low`
/// watermark check of the kernel's fast path. A miss returns nil (allocate)
/// or false (free), and the caller takes the slow path.
/// Kernel analogue: `rmqueue_pcplist` / `free_unref_page`.
@usableFromInline
struct PageFastPath: @unchecked Sendable {  // raw pointers into memory owned by `allocator`, which it keeps alive
    @usableFromInline let systemID: UInt64
    @usableFromInline let directMap: UnsafeMutableRawPointer
    @usableFromInline let capacityBytes: UInt
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    @usableFromInline let freePages: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let threshold: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let listLimits: InlineArray<4, Int>
    @usableFromInline let allocator: PageAllocator

    init(_ allocator: PageAllocator) {
        self.allocator = allocator
        systemID = allocator.systemID
        directMap = allocator.arena.directMap
        capacityBytes = UInt(allocator.arena.capacity)
        frames = allocator.arena.frames
        freePages = allocator.freePagesHot
        threshold = allocator.gate.pageThreshold
        listLimits = InlineArray { allocator.listLimits[$0] }
    }

    /// The calling thread's lists if they serve this system and free memory
    /// is above `low` (and the gate is open).
    @inlinable @inline(__always)
    func listsForFastPath() -> PageLists? {
        guard let lists = PageLists.currentForFastPath, lists.systemID == systemID,
              freePages.pointee.load(ordering: .relaxed) > threshold.pointee.load(ordering: .relaxed)
        else { return nil }
        return lists
    }

    /// A block of `order` from the calling thread's list, or nil.
    @inlinable @inline(__always)
    func allocate(order: Int, policy: AllocationPolicy) -> UnsafeMutableRawPointer? {
        guard order >= 0 && order < perThreadOrderCount && policy.group == nil && policy.isCoherent,
              let lists = listsForFastPath(), let pfn = lists.pop(order) else { return nil }
        let f = frames + pfn
        assert(f.pointee.state == PageState.cached.rawValue && Int(f.pointee.order) == order,
               "swift-mm internal: page \(pfn) in an order-\(order) per-thread list is not a cached order-\(order) block")
        f.pointee.state = PageState.allocated.rawValue
        f.pointee.flags |= PageFrame.flagEverAllocated
        let p = directMap + (pfn &<< pageShift)
        if policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: pageSize &<< order) }
        return p
    }

    /// Puts a freed block of `order` on the calling thread's list; false when
    /// the slow path must see it (anything unusual, a full list, below `low`).
    @inlinable @inline(__always)
    func free(_ pointer: UnsafeMutableRawPointer, order: Int) -> Bool {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: directMap)
        guard offset < capacityBytes && order >= 0 && order < perThreadOrderCount
              && offset & ((UInt(pageSize) &<< UInt(order)) &- 1) == 0 else { return false }
        let pfn = Int(offset &>> UInt(pageShift))
        let f = frames + pfn
        guard f.pointee.state == PageState.allocated.rawValue && Int(f.pointee.order) == order
              && f.pointee.group == 0 && f.pointee.owner == 0, let lists = listsForFastPath(),
              lists.push(pfn, order: order, limit: listLimits[order]) else { return false }
        f.pointee.state = PageState.cached.rawValue
        return true
    }

    /// The order of the allocated block that starts at `pointer`, or nil.
    @inlinable @inline(__always)
    func orderOfBlock(at pointer: UnsafeMutableRawPointer) -> Int? {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: directMap)
        guard offset < capacityBytes && offset & UInt(pageSize &- 1) == 0 else { return nil }
        let f = frames + Int(offset &>> UInt(pageShift))
        return f.pointee.state == PageState.allocated.rawValue ? Int(f.pointee.order) : nil
    }
}

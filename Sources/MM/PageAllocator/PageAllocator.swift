// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// The page allocator's fast path: what `MemorySystem.allocatePages` and
/// `freePages` inline into the caller. A hit in the calling thread's
/// per-thread list takes no lock and no read-modify-write atomic; it reads
/// the published free-page count (a plain load) to keep the `low`
/// watermark check of the kernel's fast path.
/// Kernel analogue: `rmqueue_pcplist` / `free_unref_page`.
@frozen @usableFromInline
struct PageAllocator: @unchecked Sendable {  // raw pointers into memory owned by `core`, which it keeps alive
    @usableFromInline let systemID: UInt64
    @usableFromInline let directMap: UnsafeMutableRawPointer
    @usableFromInline let capacityBytes: UInt
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    @usableFromInline let freePages: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let lowPages: Int
    @usableFromInline let limit0: Int, limit1: Int, limit2: Int, limit3: Int
    @usableFromInline let core: PageAllocatorCore

    init(core: PageAllocatorCore) {
        self.core = core
        systemID = core.systemID
        directMap = core.arena.directMap
        capacityBytes = UInt(core.arena.capacity)
        frames = core.arena.frames
        freePages = core.freePagesHot
        lowPages = core.watermarks.low
        limit0 = core.listLimits[0]; limit1 = core.listLimits[1]; limit2 = core.listLimits[2]; limit3 = core.listLimits[3]
    }

    @inlinable @inline(__always)
    func listLimit(_ order: Int) -> Int {
        order == 0 ? limit0 : (order == 1 ? limit1 : (order == 2 ? limit2 : limit3))
    }

    /// The calling thread's lists if they serve this system and free memory
    /// is above `low`.
    @inlinable @inline(__always)
    func listsForFastPath() -> PerThreadPageLists? {
        guard let lists = PerThreadPageLists.current, lists.systemID == systemID,
              freePages.pointee.load(ordering: .relaxed) > lowPages else { return nil }
        return lists
    }

    @inlinable
    func allocate(order: Int, policy: AllocationPolicy) -> UnsafeMutableRawPointer? {
        if order >= 0 && order < perThreadOrderCount && policy.group == nil, let lists = listsForFastPath() {
            let count = lists.count(order)
            let n = count.pointee.load(ordering: .relaxed)
            if n > 0 {
                let pfn = Int(lists.slots(order)[n &- 1])
                count.pointee.store(n &- 1, ordering: .relaxed)
                let f = frames + pfn
                f.pointee.state = PageState.allocated.rawValue
                f.pointee.flags |= PageFrame.flagEverAllocated
                PerThreadPageLists.bump(lists.allocatedCounter, by: 1 &<< order)
                let p = directMap + (pfn &<< pageShift)
                if policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: pageSize &<< order) }
                return p
            }
        }
        return core.allocateSlow(order: order, policy: policy)
    }

    @inlinable
    func free(_ pointer: UnsafeMutableRawPointer, order: Int) {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: directMap)
        if offset < capacityBytes && order >= 0 && order < perThreadOrderCount
            && offset & ((UInt(pageSize) &<< UInt(order)) &- 1) == 0 {
            let pfn = Int(offset &>> UInt(pageShift))
            let f = frames + pfn
            if f.pointee.state == PageState.allocated.rawValue && Int(f.pointee.order) == order,
               let lists = listsForFastPath() {
                let count = lists.count(order)
                let n = count.pointee.load(ordering: .relaxed)
                if n < listLimit(order) {
                    f.pointee.state = PageState.cached.rawValue
                    lists.slots(order)[n] = UInt32(truncatingIfNeeded: pfn)
                    count.pointee.store(n &+ 1, ordering: .relaxed)
                    PerThreadPageLists.bump(lists.freedCounter, by: 1 &<< order)
                    return
                }
            }
        }
        core.freeSlow(pointer, order: order)
    }
}

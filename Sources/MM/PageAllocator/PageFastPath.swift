// SPDX-License-Identifier: Apache-2.0
public import CMMShims
import Synchronization

/// The page allocator's fast path: what `MemorySystem.allocatePages` and
/// `freePages` inline into the caller. A hit in the calling thread's
/// per-thread list takes no lock and no read-modify-write atomic; it reads
/// the published free-page count (a plain load) to keep the `low`
/// watermark check of the kernel's fast path.
/// Kernel analogue: `rmqueue_pcplist` / `free_unref_page`.
@usableFromInline
struct PageFastPath: @unchecked Sendable {  // raw pointers into memory owned by `core`, which it keeps alive
    @usableFromInline let systemID: UInt64
    @usableFromInline let directMap: UnsafeMutableRawPointer
    @usableFromInline let capacityBytes: UInt
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    @usableFromInline let freePages: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let fastPathThreshold: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let limit0: Int, limit1: Int, limit2: Int, limit3: Int
    @usableFromInline let core: PageAllocator
    @usableFromInline let slow: SlowPath

    init(slow: SlowPath) {
        let core = slow.core
        self.core = core
        self.slow = slow
        systemID = core.systemID
        directMap = core.arena.directMap
        capacityBytes = UInt(core.arena.capacity)
        frames = core.arena.frames
        freePages = core.freePagesHot
        fastPathThreshold = core.fastPathThreshold
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
              freePages.pointee.load(ordering: .relaxed) > fastPathThreshold.pointee.load(ordering: .relaxed)
        else { return nil }
        return lists
    }

    /// Serves a page request from the calling thread's list, or hands it to
    /// the slow path. `byteCount` is 0 for `allocatePages` and the size
    /// asked for by a byte allocation (for reports).
    @inlinable
    func allocate(order: Int, policy: AllocationPolicy, byteCount: Int = 0, guarantee: Guarantee? = nil,
                  profiled: Bool = true, injectable: Bool = true, file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        if order >= 0 && order < perThreadOrderCount && policy.group == nil && policy.isCoherent
            && cmm_thread_slots_get().pointee.heldCheckedLocks == 0,
           let lists = listsForFastPath() {
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
        return slow.allocatePagesSlow(order: order, policy: policy, byteCount: byteCount, guarantee: guarantee,
                                      profiled: profiled, injectable: injectable, file: file, line: line)
    }

    @inlinable
    func free(_ pointer: UnsafeMutableRawPointer, order: Int) {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: directMap)
        if offset < capacityBytes && order >= 0 && order < perThreadOrderCount
            && offset & ((UInt(pageSize) &<< UInt(order)) &- 1) == 0 {
            let pfn = Int(offset &>> UInt(pageShift))
            let f = frames + pfn
            if f.pointee.state == PageState.allocated.rawValue && Int(f.pointee.order) == order
                && f.pointee.group == 0 && f.pointee.owner == 0, let lists = listsForFastPath() {
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

    /// Frees a block whose order the metadata knows (`deallocate`).
    @inlinable
    func deallocate(_ pointer: UnsafeMutableRawPointer) {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: directMap)
        if offset < capacityBytes && offset & UInt(pageSize &- 1) == 0 {
            let f = frames + Int(offset &>> UInt(pageShift))
            if f.pointee.state == PageState.allocated.rawValue {
                free(pointer, order: Int(f.pointee.order))
                return
            }
        }
        slow.deallocateOutsideDirectMap(pointer)
    }
}

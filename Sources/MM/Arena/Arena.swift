// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc

/// The machine's "physical memory": `capacity` bytes of private anonymous
/// memory mapped once as the *direct map*, plus a separate mapping of
/// page-frame descriptors.
///
/// Page `pfn` lives at `directMap + pfn << pageShift`; a pointer's pfn is a
/// subtraction and a shift. Pages are touched lazily (the mapping is
/// `MAP_NORESERVE`), so an unused arena costs nothing, and memory goes back
/// to the OS with `MADV_DONTNEED` (it reads as zeros afterwards).
///
/// Every mapping is `MAP_PRIVATE`, which gives `fork()` its POSIX meaning:
/// the child sees a copy-on-write snapshot of the heap, a write in either
/// process is never seen by the other, and nothing is copied at fork beyond
/// the kernel's own page-table copy. (A shared memfd, the first design, made
/// the heap shared with children, or unusable in them with `MADV_DONTFORK`.)
/// Kernel analogue: the physical memory map plus `mem_map`.
@usableFromInline
final class Arena: @unchecked Sendable {
    /// Base of the direct map (private anonymous memory, aligned to the largest block).
    @usableFromInline let directMap: UnsafeMutableRawPointer
    /// Page-frame descriptors, one per page, in an anonymous mapping.
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    /// Bytes of arena.
    @usableFromInline let capacity: Int
    /// Pages of arena.
    @usableFromInline let pageCount: Int
    private let framesLength: Int
    let syscalls: Syscalls

    init(capacity: Int, name: String, syscalls: Syscalls) throws(SystemError) {
        precondition(capacity > 0 && capacity % pageSize == 0)
        self.capacity = capacity
        self.pageCount = capacity >> pageShift
        self.syscalls = syscalls
        // Aligned to the largest block, so that every block is aligned to its size in
        // absolute addresses too (an order-1 slab of 8 KiB objects is 8 KiB aligned).
        let map = try syscalls.mapPrivate(capacity, pageSize << maxOrder).get()
        _ = cmm_name_mapping(map, capacity, name)  // "[anon:NAME]" in /proc/self/maps where the kernel can
        let framesLength = (pageCount * MemoryLayout<PageFrame>.stride + pageSize - 1) & ~(pageSize - 1)
        let frames: UnsafeMutableRawPointer
        switch syscalls.mapAnonymous(framesLength) {
        case .success(let p): frames = p
        case .failure(let e):
            munmap(map, capacity)
            throw e
        }
        self.directMap = map
        self.framesLength = framesLength
        // Anonymous memory reads as zeros: every descriptor starts as `.tail`.
        self.frames = frames.bindMemory(to: PageFrame.self, capacity: pageCount)
    }

    deinit {
        munmap(directMap, capacity)
        munmap(UnsafeMutableRawPointer(frames), framesLength)
    }

    /// Address of page `pfn` in the direct map.
    @inlinable @inline(__always)
    func address(ofPage pfn: Int) -> UnsafeMutableRawPointer {
        directMap + (pfn << pageShift)
    }

    /// Returns the pages `[pfn, pfn + count)` to the OS (`MADV_DONTNEED`:
    /// they read as zeros afterwards) and drops the descriptors of whole
    /// metadata pages strictly inside the range too, since every non-head
    /// descriptor of a free block is all zeros.
    func release(firstPage pfn: Int, pageCount count: Int) -> Result<Void, SystemError> {
        let result = discard(firstPage: pfn, pageCount: count)
        let stride = MemoryLayout<PageFrame>.stride
        let start = (UInt(bitPattern: frames + pfn + 1) + UInt(pageSize) - 1) & ~UInt(pageSize - 1)
        let end = UInt(bitPattern: frames + pfn + count) & ~UInt(pageSize - 1)
        if end > start, stride > 0 {
            _ = syscalls.advise(UnsafeMutableRawPointer(bitPattern: start)!, Int(end - start), MADV_DONTNEED)
        }
        return result
    }

    /// Drops the memory behind the direct map's view of `[pfn, pfn + count)`
    /// without touching descriptors (a vmalloc area takes these frames, and
    /// their memory lives at the area's address instead).
    func discard(firstPage pfn: Int, pageCount count: Int) -> Result<Void, SystemError> {
        syscalls.advise(address(ofPage: pfn), count << pageShift, MADV_DONTNEED)
    }

    /// Bytes of the direct map's first `pages` pages that the kernel
    /// currently backs with memory (the pages above the buddy allocator's
    /// frontier were never touched, so callers pass the frontier).
    func residentBytes(belowPage pages: Int) -> Int {
        ResidentMemory.bytes(at: directMap, length: Swift.min(pages, pageCount) << pageShift)
    }

    /// Bytes of the descriptor mapping that are resident (`mincore`).
    func residentMetadataBytes() -> Int {
        ResidentMemory.bytes(at: UnsafeMutableRawPointer(frames), length: framesLength)
    }
}

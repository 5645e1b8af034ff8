// SPDX-License-Identifier: Apache-2.0
import Glibc

/// The machine's "physical memory": one memfd of `capacity` bytes, mapped
/// once as the *direct map*, plus a separate mapping of page-frame
/// descriptors.
///
/// Page `pfn` lives at `directMap + pfn << pageShift`; a pointer's pfn is a
/// subtraction and a shift. Pages are touched lazily, so an unused arena
/// costs only the descriptors of the block heads.
/// Kernel analogue: the physical memory map plus `mem_map`.
@usableFromInline
final class Arena: @unchecked Sendable {
    /// File descriptor of the memfd that backs all arena memory.
    let fd: Int32
    /// Base of the direct map (`MAP_SHARED` over the memfd, `MADV_DONTFORK`).
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
        let fd = try syscalls.memfdCreate(name).get()
        var cleanup: [() -> Void] = [{ close(fd) }]
        func fail(_ error: SystemError) -> SystemError {
            for undo in cleanup.reversed() { undo() }
            return error
        }
        if case .failure(let e) = syscalls.truncate(fd, capacity) { throw fail(e) }
        let map: UnsafeMutableRawPointer
        // Aligned to the largest block, so that every block is aligned to its size in
        // absolute addresses too (an order-1 slab of 8 KiB objects is 8 KiB aligned).
        switch syscalls.mapShared(fd, capacity, pageSize << maxOrder) {
        case .success(let p): map = p
        case .failure(let e): throw fail(e)
        }
        cleanup.append { munmap(map, capacity) }
        // A forked child must not share the parent's heap.
        if case .failure(let e) = syscalls.advise(map, capacity, MADV_DONTFORK) { throw fail(e) }
        let framesLength = (pageCount * MemoryLayout<PageFrame>.stride + pageSize - 1) & ~(pageSize - 1)
        let frames: UnsafeMutableRawPointer
        switch syscalls.mapAnonymous(framesLength) {
        case .success(let p): frames = p
        case .failure(let e): throw fail(e)
        }
        _ = syscalls.advise(frames, framesLength, MADV_DONTFORK)
        self.fd = fd
        self.directMap = map
        self.framesLength = framesLength
        // Anonymous memory reads as zeros: every descriptor starts as `.tail`.
        self.frames = frames.bindMemory(to: PageFrame.self, capacity: pageCount)
    }

    deinit {
        munmap(directMap, capacity)
        munmap(UnsafeMutableRawPointer(frames), framesLength)
        close(fd)
    }

    /// Address of page `pfn` in the direct map.
    @inlinable @inline(__always)
    func address(ofPage pfn: Int) -> UnsafeMutableRawPointer {
        directMap + (pfn << pageShift)
    }

    /// Returns the pages `[pfn, pfn + count)` to the OS: the memfd range is
    /// punched (it reads as zeros afterwards) and the descriptors of whole
    /// metadata pages strictly inside the range are dropped too, since every
    /// non-head descriptor of a free block is all zeros.
    func release(firstPage pfn: Int, pageCount count: Int) -> Result<Void, SystemError> {
        let result = syscalls.punchHole(fd, pfn << pageShift, count << pageShift)
        let stride = MemoryLayout<PageFrame>.stride
        let start = (UInt(bitPattern: frames + pfn + 1) + UInt(pageSize) - 1) & ~UInt(pageSize - 1)
        let end = UInt(bitPattern: frames + pfn + count) & ~UInt(pageSize - 1)
        if end > start, stride > 0 {
            _ = syscalls.advise(UnsafeMutableRawPointer(bitPattern: start)!, Int(end - start), MADV_DONTNEED)
        }
        return result
    }

    /// Bytes of the memfd that the kernel currently backs with memory
    /// (`st_blocks` of the memfd), i.e. the arena's resident footprint.
    func residentBytes() -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return -1 }
        return Int(st.st_blocks) * 512
    }

    /// Bytes of the descriptor mapping that are resident (`mincore`).
    func residentMetadataBytes() -> Int {
        let pages = framesLength / pageSize
        var vec = [UInt8](repeating: 0, count: pages)
        let rc = vec.withUnsafeMutableBufferPointer { mincore(UnsafeMutableRawPointer(frames), framesLength, $0.baseAddress) }
        guard rc == 0 else { return -1 }
        return vec.reduce(0) { $0 + Int($1 & 1) } * pageSize
    }
}

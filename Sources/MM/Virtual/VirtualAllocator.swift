// SPDX-License-Identifier: Apache-2.0
import Glibc

/// One vmalloc area: pages from the buddy allocator mapped contiguously.
struct VirtualArea: Sendable {
    /// First page of the area, as an index into the vmalloc region.
    var firstPage: Int
    /// Mapped pages (the guard page after them is not counted).
    var pages: Int
    /// The buddy blocks behind it, in address order: (pfn, order).
    var blocks: [(pfn: Int, order: Int)]
    /// Runs of physically contiguous frames among its blocks.
    var runs: Int
    var requested: Int
    var site: CallSite?
}

/// Counters of the virtual allocator (`MemoryStatistics.virtual`).
/// Kernel analogue: `/proc/vmallocinfo` summed up.
public struct VirtualCounters: Sendable, Hashable {
    /// Live areas and the mappings they use (`vmalloc_areas`, `vmalloc_mappings`).
    public var areas = 0, mappings = 0
    /// Areas made and freed (`vmalloc_alloc`, `vmalloc_free`).
    public var allocations = 0, frees = 0
    /// Requests that failed, and those refused for `vm.max_map_count` (`vmalloc_fail`, `vmalloc_fail_map_count`).
    public var failures = 0, mapCountFailures = 0
    /// Lazy purges of freed address ranges (`vmalloc_purge`).
    public var purges = 0
}

/// vmalloc: a large `PROT_NONE` reservation in which each area is one
/// private anonymous mapping (`MAP_FIXED`) backed, in the arena's
/// accounting, by buddy blocks taken largest first wherever they are, with
/// an unmapped guard page after it. Freed areas are unmapped at once (their
/// pages go back to the buddy allocator) but their address ranges are
/// recycled lazily, in batches, so a stale pointer keeps faulting for a
/// while. Mappings are counted against `vm.max_map_count`, so an allocation
/// fails cleanly before the kernel would refuse.
/// Kernel analogue: `mm/vmalloc.c` (`__vmalloc_node_range`, lazy purge).
final class VirtualAllocator: Sendable {
    let base: UInt
    /// Pages in the reservation.
    let regionPages: Int
    let mapLimit: Int
    private let arena: Arena
    /// Where an area's frames come from and go back to.
    let pages: PageAllocator
    /// Sees every freed area's address (allocation profiling), wired by `MemorySystem`.
    let recordFree: (@Sendable (UnsafeMutableRawPointer) -> Void)?
    private struct State: Sendable {
        var free: [Range<Int>]
        var lazy: [Range<Int>] = []
        var lazyPages = 0
        var areas: [Int: VirtualArea] = [:]
        var mappings = 0
        var mappedPages = 0
        var counters = VirtualCounters()
    }
    private let state: Locked<State>
    /// Freed address space recycled in one batch once this many pages are pending.
    let purgeThreshold: Int

    init(pages: PageAllocator, regionBytes: Int, mapLimit: Int,
         recordFree: (@Sendable (UnsafeMutableRawPointer) -> Void)?) throws(SystemError) {
        let arena = pages.arena
        self.pages = pages
        self.recordFree = recordFree
        let base = try arena.syscalls.reserve(regionBytes).get()
        self.base = UInt(bitPattern: base)
        self.arena = arena
        regionPages = regionBytes >> pageShift
        self.mapLimit = mapLimit
        purgeThreshold = max(256, regionPages / 16)
        state = Locked(State(free: [0..<regionPages]))
    }

    deinit {
        munmap(UnsafeMutableRawPointer(bitPattern: base), regionPages << pageShift)
    }

    /// The mapping budget: `vm.max_map_count` less what the process already
    /// maps, less headroom for the rest of the process.
    static func defaultMapLimit() -> Int {
        func read(_ path: String) -> String? {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 65536) }
                if n <= 0 { break }
                bytes += buffer[0..<n]
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        let max = read("/proc/sys/vm/max_map_count").flatMap { Int(String($0.filter(\.isNumber))) } ?? 65530
        let used = read("/proc/self/maps")?.split(separator: "\n").count ?? 0
        return Swift.max(64, (max - used) / 2)
    }

    /// The region's address range.
    var region: Range<UInt> { base..<(base + UInt(regionPages << pageShift)) }

    @inline(__always)
    func contains(_ pointer: UnsafeRawPointer) -> Bool {
        UInt(bitPattern: pointer) &- base < UInt(regionPages << pageShift)
    }

    // MARK: Address space

    private func reserveRange(_ pages: Int, _ s: inout State) -> Int? {
        func take() -> Int? {
            guard let i = s.free.firstIndex(where: { $0.count >= pages }) else { return nil }
            let start = s.free[i].lowerBound
            s.free[i] = (start + pages)..<s.free[i].upperBound
            if s.free[i].isEmpty { s.free.remove(at: i) }
            return start
        }
        if let start = take() { return start }
        purge(&s)
        return take()
    }

    /// Returns the lazily freed ranges to the free list, coalesced.
    private func purge(_ s: inout State) {
        guard !s.lazy.isEmpty else { return }
        var all = (s.free + s.lazy).sorted { $0.lowerBound < $1.lowerBound }
        var merged: [Range<Int>] = []
        for r in all {
            if let last = merged.last, last.upperBound == r.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<r.upperBound
            } else {
                merged.append(r)
            }
        }
        all = merged
        s.free = all
        s.lazy.removeAll()
        s.lazyPages = 0
        s.counters.purges += 1
    }

    // MARK: Allocation

    /// Makes one area of `blocks` (gathered by the caller from the page
    /// allocator); on failure the caller returns the blocks. Returns the
    /// address, or the reason it could not.
    ///
    /// The area is one private anonymous mapping at its place in the
    /// region: its memory lives there, while the frames it holds account for
    /// it in the arena (they may be scattered all over it). The direct map's
    /// view of its `resident` blocks is discarded, run by run, so no memory
    /// is held twice.
    func map(blocks: [(pfn: Int, order: Int, resident: Bool)], requested: Int,
             site: CallSite?) -> Result<UInt, VirtualFailure> {
        let pages = blocks.reduce(0) { $0 + (1 << $1.order) }
        // Physically contiguous neighbours count as one run, and are discarded in one call.
        func runs(of blocks: [(pfn: Int, order: Int, resident: Bool)]) -> [(pfn: Int, pages: Int)] {
            var runs: [(pfn: Int, pages: Int)] = []
            for b in blocks {
                if let last = runs.last, last.pfn + last.pages == b.pfn {
                    runs[runs.count - 1].pages += 1 << b.order
                } else {
                    runs.append((b.pfn, 1 << b.order))
                }
            }
            return runs
        }
        let runCount = runs(of: blocks).count
        let discardRuns = runs(of: blocks.filter(\.resident))
        return state.withLock { s in
            // The area is one VMA and splits the reservation once more.
            guard s.mappings + 2 <= mapLimit else {
                s.counters.mapCountFailures += 1
                return .failure(.mapCount(needed: 2, used: s.mappings, limit: mapLimit))
            }
            guard let first = reserveRange(pages + 1, &s) else {
                return .failure(.addressSpace(pages: pages))
            }
            let address = UnsafeMutableRawPointer(bitPattern: base + UInt(first << pageShift))!
            if case .failure(let e) = arena.syscalls.mapFixed(address, pages << pageShift) {
                s.free.append(first..<(first + pages + 1))
                return .failure(.system(e))
            }
            for run in discardRuns { _ = arena.discard(firstPage: run.pfn, pageCount: run.pages) }
            s.areas[first] = VirtualArea(firstPage: first, pages: pages, blocks: blocks.map { ($0.pfn, $0.order) }, runs: runCount,
                                         requested: requested, site: site)
            s.mappings += 2
            s.mappedPages += pages
            s.counters.allocations += 1
            return .success(base + UInt(first << pageShift))
        }
    }

    /// Unmaps the area at `pointer` and returns its blocks for the caller to
    /// free, or what is wrong with the pointer.
    func unmap(_ pointer: UnsafeMutableRawPointer) -> Result<[(pfn: Int, order: Int)], HardeningViolation.Kind> {
        let address = UInt(bitPattern: pointer)
        let offset = UInt(bitPattern: pointer) - base
        let page = Int(offset >> UInt(pageShift))
        return state.withLock { s in
            guard offset & UInt(pageSize - 1) == 0, let area = s.areas.removeValue(forKey: page) else {
                if s.areas.values.contains(where: { page >= $0.firstPage && page < $0.firstPage + $0.pages }) {
                    return .failure(.interiorPointer)
                }
                if s.lazy.contains(where: { $0.contains(page) }) { return .failure(.doubleFree) }
                return .failure(.neverAllocated)
            }
            _ = arena.syscalls.unmapToReserved(UnsafeMutableRawPointer(bitPattern: address)!, area.pages << pageShift)
            s.mappings -= 2
            s.mappedPages -= area.pages
            s.lazy.append(area.firstPage..<(area.firstPage + area.pages + 1))
            s.lazyPages += area.pages + 1
            if s.lazyPages >= purgeThreshold { purge(&s) }
            s.counters.frees += 1
            return .success(area.blocks)
        }
    }

    func usableSize(_ pointer: UnsafeRawPointer) -> Int? {
        let offset = UInt(bitPattern: pointer) - base
        guard offset & UInt(pageSize - 1) == 0 else { return nil }
        return state.withLock { $0.areas[Int(offset >> UInt(pageShift))].map { $0.pages << pageShift } }
    }

    /// Bytes of the live areas that the kernel backs with memory.
    func residentBytes() -> Int {
        state.withLock { s in
            s.areas.values.reduce(0) { total, area in
                total + ResidentMemory.bytes(at: UnsafeMutableRawPointer(bitPattern: base + UInt(area.firstPage << pageShift))!,
                                             length: area.pages << pageShift)
            }
        }
    }

    func countFailure() { state.withLock { $0.counters.failures += 1 } }

    // MARK: Statistics

    struct Snapshot: Sendable {
        var mappedPages: Int, mappings: Int, areas: Int, counters: VirtualCounters, info: String
    }

    func snapshot() -> Snapshot {
        state.withLock { s in
            let lines = s.areas.values.sorted { $0.firstPage < $1.firstPage }.map { a -> String in
                let start = base + UInt(a.firstPage << pageShift)
                let end = start + UInt((a.pages + 1) << pageShift)
                return "0x\(String(start, radix: 16))-0x\(String(end, radix: 16)) \((a.pages + 1) << pageShift) \(a.site?.description ?? "-") pages=\(a.pages) runs=\(a.runs) vmalloc\n"
            }
            var counters = s.counters
            counters.areas = s.areas.count
            counters.mappings = s.mappings
            return Snapshot(mappedPages: s.mappedPages, mappings: s.mappings, areas: s.areas.count,
                            counters: counters, info: lines.joined())
        }
    }
}

/// Why a virtual mapping could not be made.
enum VirtualFailure: Error, Sendable {
    case mapCount(needed: Int, used: Int, limit: Int)
    case addressSpace(pages: Int)
    case system(SystemError)

    var reason: String {
        switch self {
        case .mapCount(let needed, let used, let limit):
            return "the area needs \(needed) more mappings and \(used) of the \(limit) allowed (vm.max_map_count budget) are in use"
        case .addressSpace(let pages):
            return "no free range of \(pages + 1) pages left in the vmalloc region"
        case .system(let e):
            return e.description
        }
    }
}

extension HardeningViolation.Kind: Error {}

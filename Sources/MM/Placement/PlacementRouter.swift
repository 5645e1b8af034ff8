// SPDX-License-Identifier: Apache-2.0

/// Where one request's memory comes from, decided once, before the first attempt.
enum Route: Sendable, Equatable {
    /// An object of the cache at `index` (a kmalloc class or a user's cache).
    case object(index: Int)
    /// A buddy block of `2^order` pages.
    case pages(order: Int)
    /// A vmalloc area of `byteCount` bytes.
    case virtual(byteCount: Int)
    /// kvmalloc: one cheap attempt at a block of `order`, then a vmalloc area.
    case automatic(order: Int, byteCount: Int)
}

/// What one attempt at a route came to.
enum PlacementAttempt {
    /// The memory.
    case allocated(UnsafeMutableRawPointer)
    /// Not enough free memory above the floor.
    case noMemory
    /// Memory was there but could not be used (a vmalloc mapping could not
    /// be made), with the reason.
    case unusable(String)
}

/// The placement strategies: the one place that decides where a byte
/// request is served (`route`) and makes one non-blocking attempt at a
/// route (`attempt`). Each strategy is a box below this one — the slab
/// layer, the page allocator, the virtual allocator — and none of them calls
/// back up: they return nil, and the slow path above retries.
/// Kernel analogue: the size dispatch of `kmalloc`/`kvmalloc_node`
/// (`kmalloc_large`, the `vmalloc` fallback).
@usableFromInline
final class PlacementRouter: Sendable {
    let pages: PageAllocator
    let slab: SlabAllocator
    let virtual: VirtualAllocator

    init(pages: PageAllocator, slab: SlabAllocator, virtual: VirtualAllocator) {
        self.pages = pages
        self.slab = slab
        self.virtual = virtual
    }

    /// The buddy order that holds `byteCount` bytes (1...maxContiguousBytes).
    @inlinable @inline(__always)
    static func order(forBytes byteCount: Int) -> Int {
        let pages = (byteCount &+ pageSize &- 1) &>> pageShift
        return pages <= 1 ? 0 : Int.bitWidth &- (pages &- 1).leadingZeroBitCount
    }

    /// Why a byte request can never be met, or nil.
    func impossibility(byteCount: Int, placement: Placement) -> String? {
        if byteCount == 0 { return "a zero-byte allocation has no meaning (the kernel's ZERO_SIZE_PTR faults on use)" }
        if byteCount < 0 { return "the size is negative" }
        if byteCount > pages.arena.capacity {
            return "\(byteCount) bytes is more than the whole arena (\(pages.arena.capacity) bytes)"
        }
        if byteCount > maxContiguousBytes && placement == .contiguous {
            return "contiguous memory comes in blocks of at most \(maxContiguousBytes) bytes (order \(maxOrder)); use placement .virtual or .automatic"
        }
        return nil
    }

    /// The route of a possible byte request. Up to `kmallocMaxSize` bytes,
    /// `.contiguous` and `.automatic` requests take a kmalloc object — from
    /// the class's accounted twin (`kmalloc-cg-*`) when they are charged to
    /// a group, so that the group is charged the object's size class.
    /// Larger `.contiguous` requests take a block; `.virtual` always maps;
    /// `.automatic` above the kmalloc sizes is kvmalloc.
    func route(byteCount: Int, placement: Placement, charged: Bool) -> Route {
        switch placement {
        case .virtual:
            return .virtual(byteCount: byteCount)
        case .contiguous, .automatic:
            if byteCount <= kmallocMaxSize {
                let index = SizeClass.index(forBytes: byteCount)
                return .object(index: charged ? index + kmallocClassCount : index)  // kmalloc-cg-*
            }
            if placement == .contiguous { return .pages(order: Self.order(forBytes: byteCount)) }
            return .automatic(order: Self.order(forBytes: byteCount), byteCount: byteCount)
        }
    }

    /// The route of a guaranteed byte request: kmalloc objects and page
    /// blocks up to `costlyOrder`, kvmalloc above (guaranteed page blocks
    /// stop at `costlyOrder`).
    func guaranteedRoute(byteCount: Int, charged: Bool) -> Route {
        if byteCount <= pageSize << costlyOrder { return route(byteCount: byteCount, placement: .contiguous, charged: charged) }
        return .automatic(order: Self.order(forBytes: byteCount), byteCount: byteCount)
    }

    /// Bytes a request on `route` is charged before its first attempt: the
    /// most any of its steps hands out (kvmalloc's contiguous step takes a
    /// whole buddy block); the slow path corrects the charge to `bytes(of:)`
    /// of the step that served it.
    func chargeBytes(of route: Route) -> Int {
        if case .automatic(let order, let byteCount) = route, byteCount <= maxContiguousBytes {
            return Swift.max(pageSize << order, bytes(of: route))
        }
        return bytes(of: route)
    }

    /// Bytes a successful attempt at `route` hands out (charged, zeroed, profiled).
    func bytes(of route: Route) -> Int {
        switch route {
        case .object(let index): return slab.objectSize(index)
        case .pages(let order): return pageSize << order
        case .virtual(let byteCount), .automatic(_, let byteCount):
            return ((byteCount + pageSize - 1) >> pageShift) << pageShift
        }
    }

    /// One attempt at `route` that leaves at least `floor` free pages,
    /// charged to `groupID` (0: none). Never blocks, never reclaims.
    /// `.automatic` is the slow path's to split into its two steps; here it
    /// is its vmalloc step.
    func attempt(_ route: Route, floor: Int, chargedTo groupID: UInt32, site: CallSite?) -> PlacementAttempt {
        switch route {
        case .object(let index):
            return slab.allocate(index: index, floor: floor, site: site, chargedTo: groupID).map(PlacementAttempt.allocated) ?? .noMemory
        case .pages(let order):
            return pages.allocate(order: order, floor: floor, chargedTo: groupID).map(PlacementAttempt.allocated) ?? .noMemory
        case .virtual(let byteCount), .automatic(_, let byteCount):
            switch virtual.allocate(byteCount: byteCount, floor: floor, chargedTo: groupID, site: site) {
            case .mapped(let p): return .allocated(p)
            case .noPages: return .noMemory
            case .noMapping(let reason): return .unusable(reason)
            }
        }
    }
}

extension PlacementRouter {
    /// The order direct reclaim aims for on behalf of `route` (a slab, a
    /// block, or the pages of an area, up to the largest block).
    func reclaimOrder(of route: Route) -> Int {
        switch route {
        case .object(let index): return slab.cache(index).layout.slabOrder
        case .pages(let order): return order
        case .virtual(let byteCount), .automatic(_, let byteCount):
            return Swift.min(maxOrder, Self.order(forBytes: byteCount))
        }
    }
}

// SPDX-License-Identifier: Apache-2.0

#if DEBUG || MM_INTERNAL_CHECKS
extension PageAllocator {
    /// Every broken invariant of the page allocator, in words; empty when
    /// all hold. Only meaningful while no other thread uses the system.
    func invariantViolations() -> [String] {
        Self.lists.withAttached(to: systemID) { attached in
            zone.withLock { state in
                var problems: [String] = []
                let frames = arena.frames
                let n = arena.pageCount
                var freeSeen = 0, cachedSeen = 0, releasedSeen = 0
                var blocks = Array(repeating: 0, count: maxOrder + 1)
                // Above the frontier: free largest blocks, descriptors untouched.
                let frontier = state.buddy.frontier
                if frontier & ((1 << maxOrder) - 1) != 0 || frontier > n {
                    problems.append("the frontier \(frontier) is not a largest-block boundary inside the arena")
                }
                freeSeen += n - frontier
                releasedSeen += n - frontier
                var pfn = 0
                while pfn < Swift.min(n, frontier) && problems.count < 20 {
                    let f = frames[pfn]
                    guard let state = PageState(rawValue: f.state), state != .tail else {
                        problems.append("page \(pfn) is not the head of any block (state \(f.state))")
                        break
                    }
                    let order = Int(f.order)
                    if order > maxOrder || pfn & ((1 << order) - 1) != 0 || pfn + (1 << order) > n {
                        problems.append("block at page \(pfn) has impossible order \(order)")
                        break
                    }
                    for t in (pfn + 1)..<(pfn + (1 << order)) where frames[t].state != PageState.tail.rawValue {
                        problems.append("page \(t) inside the order-\(order) block at \(pfn) is a head too (state \(frames[t].state))")
                    }
                    switch state {
                    case .free:
                        freeSeen += 1 << order
                        blocks[order] += 1
                        if f.flags & PageFrame.flagReleased != 0 { releasedSeen += 1 << order }
                        if order < maxOrder {
                            let buddy = frames[pfn ^ (1 << order)]
                            if buddy.state == PageState.free.rawValue && Int(buddy.order) == order {
                                problems.append("free buddies at pages \(pfn) and \(pfn ^ (1 << order)) (order \(order)) were not merged")
                            }
                        }
                    case .cached: cachedSeen += 1 << order
                    case .allocated, .tail: break
                    }
                    pfn += 1 << order
                }
                // Free lists against the descriptors.
                for order in 0...maxOrder {
                    var count = 0
                    var prev = PageFrame.none
                    var p = state.buddy.heads[order]
                    while p != PageFrame.none && count <= n {
                        let f = frames[Int(p)]
                        if f.state != PageState.free.rawValue || Int(f.order) != order {
                            problems.append("order-\(order) free list holds page \(p) with state \(f.state), order \(f.order)")
                            break
                        }
                        if f.prev != prev { problems.append("order-\(order) free list: page \(p) has a wrong back link") }
                        prev = p
                        p = f.next
                        count += 1
                    }
                    if state.buddy.tails[order] != prev { problems.append("order-\(order) free list: wrong tail") }
                    if count != blocks[order] || count != state.buddy.blockCounts[order] {
                        problems.append("order \(order): \(count) blocks on the list, \(blocks[order]) free heads, counter \(state.buddy.blockCounts[order])")
                    }
                }
                if freeSeen != state.buddy.freePages {
                    problems.append("free pages: \(freeSeen) in free blocks, counter says \(state.buddy.freePages)")
                }
                if freePagesHot.pointee.load(ordering: .relaxed) != state.buddy.availablePages {
                    problems.append("published free-page count is stale")
                }
                if state.buddy.withheldPages != arena.pageCount - limitPages.load(ordering: .relaxed) {
                    problems.append("withheld pages \(state.buddy.withheldPages) do not match the limit of \(limitPages.load(ordering: .relaxed)) pages")
                }
                if releasedSeen != state.buddy.releasedPages {
                    problems.append("released pages: \(releasedSeen) in blocks, counter says \(state.buddy.releasedPages)")
                }
                var listed = 0
                for lists in attached {
                    for order in 0..<perThreadOrderCount {
                        let c = lists.count(order)
                        if c > listLimits[order] { problems.append("a per-thread order-\(order) list holds \(c) > \(listLimits[order]) blocks") }
                        for i in 0..<Swift.min(c, listLimits[order]) {
                            let f = frames[lists.slot(order, i)]
                            if f.state != PageState.cached.rawValue || Int(f.order) != order {
                                problems.append("per-thread order-\(order) list holds page \(lists.slot(order, i)) with state \(f.state)")
                            }
                        }
                        listed += c << order
                    }
                }
                if listed != cachedSeen {
                    problems.append("cached pages: \(cachedSeen) marked cached, \(listed) in per-thread lists")
                }
                return problems
            }
        }
    }
}
#endif

// SPDX-License-Identifier: Apache-2.0
import Synchronization

extension PageAllocator {
    /// A consistent snapshot of the page allocator (lists lock, then zone lock).
    func pageStatistics() -> PageStatistics {
        Self.lists.withAttached(to: systemID) { attached in
            var cached = 0, allocated = 0, freed = 0
            for lists in attached {
                cached += lists.cachedPages
                allocated += lists.record.pointee.allocated.load(ordering: .relaxed)
                freed += lists.record.pointee.freed.load(ordering: .relaxed)
            }
            return zone.withLock { state in
                var c = state.counters
                c.pgalloc += allocated + state.foldedAllocated
                c.pgfree += freed + state.foldedFreed
                c.lowestFreePages = Swift.min(lowestFreePages.load(ordering: .relaxed), arena.pageCount)
                c.invalidRequests = invalidRequests.load(ordering: .relaxed)
                c.hardeningViolations = hardeningViolations.load(ordering: .relaxed)
                return PageStatistics(
                    buddyFreePages: state.buddy.freePages, withheldPages: state.buddy.withheldPages, cachedPages: cached,
                    releasedPages: state.buddy.releasedPages,
                    freeBlocks: state.buddy.blockCounts.enumerated().map { order, count in
                        order == maxOrder ? count + state.buddy.untouchedBlocks : count
                    },
                    counters: c, threadsWithLists: attached.count)
            }
        }
    }
}

/// The page allocator's part of `MemoryStatistics`.
struct PageStatistics: Sendable {
    /// Pages on the buddy lists, the withheld ones included.
    var buddyFreePages: Int
    /// Pages the process limit withholds (arena − limit).
    var withheldPages: Int
    var cachedPages: Int
    var releasedPages: Int
    var freeBlocks: [Int]
    var counters: PageAllocatorCounters
    var threadsWithLists: Int
}

extension PageStatistics {
    /// Free pages that requests may take (limit − used; never below 0).
    var availablePages: Int { Swift.max(0, buddyFreePages + cachedPages - withheldPages) }
}

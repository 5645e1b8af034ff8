// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// The process limit (R11), done as a counted balloon: the buddy zone
/// withholds `arena − limit` free pages from every request, so free memory
/// is `limit − used` at once and the watermarks, recomputed from the limit,
/// apply to it. Unlike a balloon that takes particular pages out (the
/// kernel's virtio-balloon), the withheld pages are a count, not a set: they
/// stay on the free lists, buddies still merge, and raising the limit gives
/// them back in one store. Their memory goes back to the OS: free blocks are
/// released (`MADV_DONTNEED`) until the released free pages cover the
/// withheld count, so the process's resident memory follows the limit.
/// Kernel analogue: a balloon driver's inflate/deflate, and the effect of
/// writing `memory.max` on a cgroup.
extension PageAllocator {
    /// Sets the limit to `pages` (the caller clamps it to the arena) with the
    /// watermarks computed from it; wakes waiters when it rose, the
    /// background reclaimer when free memory is now below `low`.
    func setLimit(pages: Int, watermarks newMarks: PageWatermarks) {
        let old = limitPages.exchange(pages, ordering: .relaxed)
        zone.withLock { state in
            state.buddy.withheldPages = arena.pageCount - pages
            publish(state)
        }
        watermarkWords.store(newMarks)
        gate.setLow(newMarks.low)
        releaseWithheld()
        if pages > old { waitQueue.notifyFreed() }
        if freePages <= newMarks.low { wakeBackgroundReclaim() }
    }

    /// Returns to the OS as many free pages as the limit withholds and are
    /// still resident (largest free blocks first). Returns the pages released.
    @discardableResult
    func releaseWithheld() -> Int {
        zone.withLock { state in
            var deficit = state.buddy.withheldPages - state.buddy.releasedPages
            guard deficit > 0 else { return 0 }
            var released = 0
            for minOrder in stride(from: maxOrder, through: 0, by: -1) where deficit > 0 {
                let candidates = state.buddy.releaseCandidates(minOrder: minOrder, minimumAge: 0, now: 0, limit: 256)
                for (pfn, order) in candidates where deficit > 0 {
                    if case .success = arena.release(firstPage: pfn, pageCount: 1 << order) {
                        state.buddy.markReleased(pfn, order: order)
                        released += 1 << order
                        deficit -= 1 << order
                    }
                }
            }
            state.counters.pgrelease += released
            if released > 0 { state.counters.releaseRuns += 1 }
            return released
        }
    }
}

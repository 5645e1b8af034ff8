// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Returning free memory to the OS: free blocks of at least `releaseOrder`
/// go back to the OS (`MADV_DONTNEED`; they read as zeros afterwards) once they have been
/// free for `releaseDelay` while free memory is above `high`, so warm memory
/// that is about to be reused is not refaulted. Kernel analogue: none inside
/// the kernel; in user space, jemalloc's decay and mimalloc's purge delay.
extension PageAllocator {
    /// Called after a block was merged into the free lists.
    func maybeRelease(after merged: (pfn: Int, order: Int), now: UInt32) {
        guard let releaseOrder, merged.order >= releaseOrder,
              freePagesHot.pointee.load(ordering: .relaxed) > watermarks.high else { return }
        if releaseDelayTicks == 0 {
            releasePass(minOrder: releaseOrder, minimumAge: 0, limit: 1, now: now)
            return
        }
        let last = lastReleasePassTick.load(ordering: .relaxed)
        guard now &- last >= Swift.max(1, releaseDelayTicks / 2),
              lastReleasePassTick.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        releasePass(minOrder: releaseOrder, minimumAge: releaseDelayTicks, limit: 64, now: now)
    }

    /// Releases free blocks now; returns the pages released.
    @discardableResult
    func releasePass(minOrder: Int, minimumAge: UInt32, limit: Int, now: UInt32) -> Int {
        zone.withLock { state in
            let candidates = state.buddy.releaseCandidates(minOrder: minOrder, minimumAge: minimumAge, now: now, limit: limit)
            var released = 0
            for (pfn, order) in candidates {
                // Under the zone lock: nobody can take the block while it is released.
                if case .success = arena.release(firstPage: pfn, pageCount: 1 << order) {
                    state.buddy.markReleased(pfn, order: order)
                    released += 1 << order
                }
            }
            state.counters.pgrelease += released
            state.counters.releaseRuns += 1
            return released
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Where blocked allocations wait for memory: every free that reaches the
/// buddy lists bumps a generation and wakes the waiters. A waiter reads the
/// generation before its last attempt and sleeps only if nothing was freed
/// since, so no wake-up is lost. Kernel analogue: the allocation wait of
/// `memalloc_retry_wait` / kswapd's `pfmemalloc_wait`.
final class FreeWaitQueue: Sendable {
    private let lock = ConditionLock()
    private let waiters = Atomic<Int>(0)
    private let generationCounter = Atomic<UInt64>(0)

    /// Requests sleeping here now.
    var waiterCount: Int { waiters.load(ordering: .relaxed) }

    /// The current generation; pass it to `wait`.
    var generation: UInt64 { generationCounter.load(ordering: .acquiring) }

    /// In a forked child: the parent's waiters do not exist here.
    func resetAfterFork() { waiters.store(0, ordering: .relaxed) }

    /// Memory was freed: wake every waiter (cheap when there are none).
    func notifyFreed() {
        generationCounter.wrappingAdd(1, ordering: .releasing)
        if waiters.load(ordering: .acquiring) > 0 { lock.broadcast() }
    }

    /// Sleeps until memory is freed after `generation`, or `timeout` passes.
    /// Returns whether memory was freed.
    @discardableResult
    func wait(since generation: UInt64, timeout: Duration) -> Bool {
        waiters.wrappingAdd(1, ordering: .acquiringAndReleasing)
        lock.wait(timeout: timeout) { generationCounter.load(ordering: .acquiring) == generation }
        waiters.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        return generationCounter.load(ordering: .acquiring) != generation
    }
}

// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// Where blocked allocations wait for memory: every free that reaches the
/// buddy lists bumps a generation and wakes the waiters. A waiter reads the
/// generation before its last attempt and sleeps only if nothing was freed
/// since, so no wake-up is lost. Kernel analogue: the allocation wait of
/// `memalloc_retry_wait` / kswapd's `pfmemalloc_wait`.
///
/// POSIX mutex and condition variable: ThreadSanitizer understands them, and
/// only blocked allocations ever take them.
final class FreeWaitQueue: @unchecked Sendable {  // the pthread objects live in allocated memory and are only used through pthread calls
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private let waiters = Atomic<Int>(0)
    private let generationCounter = Atomic<UInt64>(0)

    init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Requests sleeping here now.
    var waiterCount: Int { waiters.load(ordering: .relaxed) }

    /// The current generation; pass it to `wait`.
    var generation: UInt64 { generationCounter.load(ordering: .acquiring) }

    /// Memory was freed: wake every waiter (cheap when there are none).
    func notifyFreed() {
        generationCounter.wrappingAdd(1, ordering: .releasing)
        if waiters.load(ordering: .acquiring) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
    }

    /// Sleeps until memory is freed after `generation`, or `timeout` passes.
    /// Returns whether memory was freed.
    @discardableResult
    func wait(since generation: UInt64, timeout: Duration) -> Bool {
        pthread_mutex_lock(mutex)
        waiters.wrappingAdd(1, ordering: .acquiringAndReleasing)
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let ns = Int(timeout.components.seconds) * 1_000_000_000 + Int(timeout.components.attoseconds / 1_000_000_000)
        let total = Int(deadline.tv_nsec) + ns
        deadline.tv_sec += total / 1_000_000_000
        deadline.tv_nsec = total % 1_000_000_000
        while generationCounter.load(ordering: .acquiring) == generation {
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { break }
        }
        waiters.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        pthread_mutex_unlock(mutex)
        return generationCounter.load(ordering: .acquiring) != generation
    }
}

// SPDX-License-Identifier: Apache-2.0
import Glibc

/// A POSIX mutex and condition variable on the monotonic clock, for the
/// places where a thread must sleep until another wakes it or a timeout
/// passes. ThreadSanitizer understands both.
///
/// Sleepers hold no allocator lock, so the fork gate does not cover these;
/// instead every instance is listed, and a forked child re-initialises them
/// all (a thread of the parent may have been inside one, and waiters of the
/// parent do not exist in the child).
final class ConditionLock: @unchecked Sendable {  // the pthread objects are only used through pthread calls
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        initializeObjects()
        let address = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
        ConditionLock.all.withLock { _ = $0.insert(address) }
    }

    private func initializeObjects() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        let address = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
        ConditionLock.all.withLock { _ = $0.remove(address) }
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// The addresses of every live instance (an instance removes itself in deinit).
    private static let all = Locked<Set<UInt>>([])

    /// In a forked child: every mutex and condition variable starts afresh.
    static func reinitializeAllAfterFork() {
        all.withLock { locks in
            for address in locks {
                Unmanaged<ConditionLock>.fromOpaque(UnsafeRawPointer(bitPattern: address)!).takeUnretainedValue()
                    .initializeObjects()
            }
        }
    }

    /// Wakes every thread sleeping in `wait`.
    func broadcast() {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Sleeps while `keepWaiting()` (checked under the mutex) is true, until
    /// woken or `timeout` passes.
    func wait(timeout: Duration, while keepWaiting: () -> Bool) {
        pthread_mutex_lock(mutex)
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let ns = Int(deadline.tv_nsec) + Int(timeout.components.attoseconds / 1_000_000_000)
            + Int(timeout.components.seconds) * 1_000_000_000
        deadline.tv_sec += ns / 1_000_000_000
        deadline.tv_nsec = ns % 1_000_000_000
        while keepWaiting() {
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { break }
        }
        pthread_mutex_unlock(mutex)
    }
}

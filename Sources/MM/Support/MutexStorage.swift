// SPDX-License-Identifier: Apache-2.0
import Glibc

/// A glibc mutex and the value it guards, in memory of their own (stable
/// addresses, no exclusivity checks on the value). The one implementation
/// behind `Locked` (allocator state, entered inside the fork gate) and
/// `ReclaimCheckedMutex` (the user's locks).
///
/// Not Synchronization's `Mutex`: on Linux it caches its owner's thread id
/// per thread, so in a forked child with a second thread a contended `Mutex`
/// fails ("Unknown error occurred while attempting to acquire a Mutex");
/// glibc's mutexes are fork-aware, and ThreadSanitizer understands them.
final class MutexStorage<Value>: @unchecked Sendable {  // the value is only touched with the mutex held
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let value: UnsafeMutablePointer<Value>

    init(_ value: consuming Value) {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: value)
    }

    deinit {
        value.deinitialize(count: 1)
        value.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func tryLock() -> Bool { pthread_mutex_trylock(mutex) == 0 }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }
}

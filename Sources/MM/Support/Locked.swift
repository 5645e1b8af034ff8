// SPDX-License-Identifier: Apache-2.0
import Glibc

/// The lock of every piece of allocator state: a POSIX mutex around a
/// value, which ThreadSanitizer sees and which a `fork()` never catches held.
///
/// - fork: the section runs inside a read hold of the process's fork gate
///   (`ForkGate`), which the `pthread_atfork` prepare handler takes for
///   writing. So at the moment of `fork()` no other thread is inside any
///   `Locked` section, and the child finds every lock free and every state
///   consistent (jemalloc and scudo take each of their locks in the prepare
///   handler for the same reason; one gate does it for all of ours).
/// - Why not Synchronization's `Mutex`: on Linux it is a priority-inheritance
///   futex that stores its owner's thread id, which it caches per thread. A
///   forked child's thread keeps the parent's cached id, so once the child
///   has a second thread any contended `Mutex` fails with "Unknown error
///   occurred while attempting to acquire a Mutex" (seen in the fork tests).
///   glibc's mutexes are fork-aware; TSan also understands them directly.
///
/// Public so that code around swift-mm (the scenario lab, tests,
/// benchmarks) uses the same lock. Do not sleep inside a section: a
/// `fork()` waits for every section to end.
public final class Locked<Value: Sendable>: @unchecked Sendable {  // the value is only touched under the mutex
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    /// A lock around `value`.
    public init(_ value: Value) {
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

    /// Runs `body` with exclusive access to the value.
    public func withLock<R: Sendable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        ForkGate.enter()
        pthread_mutex_lock(mutex)
        defer {
            pthread_mutex_unlock(mutex)
            ForkGate.leave()
        }
        return try body(&value.pointee)
    }
}

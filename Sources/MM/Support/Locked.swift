// SPDX-License-Identifier: Apache-2.0

/// The lock of every piece of allocator state: a POSIX mutex around a
/// value, which ThreadSanitizer sees and which a `fork()` never catches held.
///
/// - fork: the section runs inside a read hold of the process's fork gate
///   (`ForkGate`), which the `pthread_atfork` prepare handler takes for
///   writing. So at the moment of `fork()` no other thread is inside any
///   `Locked` section, and the child finds every lock free and every state
///   consistent (jemalloc and scudo take each of their locks in the prepare
///   handler for the same reason; one gate does it for all of ours).
/// - The mutex is a glibc one (`MutexStorage`), not Synchronization's
///   `Mutex`, which a forked child with a second thread cannot use.
///
/// Do not sleep inside a section: a `fork()` waits for every section to end.
final class Locked<Value: Sendable>: Sendable {
    private let storage: MutexStorage<Value>

    /// A lock around `value`.
    init(_ value: Value) {
        storage = MutexStorage(value)
    }

    /// Runs `body` with exclusive access to the value.
    func withLock<R: Sendable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        ForkGate.enter()
        storage.lock()
        defer {
            storage.unlock()
            ForkGate.leave()
        }
        return try body(&storage.value.pointee)
    }
}

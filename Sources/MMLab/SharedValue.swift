// SPDX-License-Identifier: Apache-2.0
import Glibc

/// A value shared between a scenario's (or a benchmark's) threads, behind a
/// POSIX mutex, in a class so that escaping closures — shrinkers, OOM kill
/// handlers, event sinks — can capture it. A glibc mutex rather than
/// `Synchronization.Mutex`: ThreadSanitizer sees its ordering.
public final class SharedValue<Value: Sendable>: @unchecked Sendable {  // `value` is only touched with `mutex` held
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    /// A lock around `value`.
    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the value.
    public func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body(&value)
    }

    /// The value now.
    public func get() -> Value { withLock { $0 } }

    /// Replaces the value.
    public func set(_ value: Value) { withLock { $0 = value } }
}

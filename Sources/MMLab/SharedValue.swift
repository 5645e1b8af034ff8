// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A value shared between a scenario's (or a benchmark's) threads: a
/// `Mutex` in a class, so that escaping closures — shrinkers, OOM kill
/// handlers, event sinks — can capture it.
public final class SharedValue<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    /// A lock around `value`.
    public init(_ value: Value) { mutex = Mutex(value) }

    /// Runs `body` with exclusive access to the value.
    public func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }

    /// The value now.
    public func get() -> Value { mutex.withLock { $0 } }

    /// Replaces the value.
    public func set(_ value: Value) { mutex.withLock { $0 = value } }
}

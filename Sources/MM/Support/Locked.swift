// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Synchronization

/// A `Mutex` that ThreadSanitizer can see: every critical section is
/// bracketed with `__tsan_acquire`/`__tsan_release` on the lock's address.
///
/// Synchronization's `Mutex` takes its futex in an uninstrumented library, so
/// under `--sanitize=thread` every access it protects is reported as a race
/// (checked with a two-thread counter: one report per run). The annotations
/// cost one call to an empty function outside sanitizer builds and are used
/// only on slow paths. Public so that code around swift-mm (the scenario
/// lab, tests, benchmarks) uses the same TSan-visible lock.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    /// A lock around `value`.
    public init(_ value: Value) {
        mutex = Mutex(value)
    }

    @inline(__always)
    private var syncAddress: UnsafeMutableRawPointer {
        Unmanaged.passUnretained(self).toOpaque()
    }

    /// Runs `body` with exclusive access to the value.
    public func withLock<R: Sendable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        let address = syncAddress
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending R in
            cmm_tsan_acquire(address)
            defer { cmm_tsan_release(address) }
            return try body(&value)
        }
    }
}

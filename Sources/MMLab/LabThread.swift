// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// A POSIX thread running a closure, joinable with a deadline: a scenario's
/// thread may be stuck in a deadlock the scenario set up on purpose.
final class LabThread: @unchecked Sendable {  // `thread` is written once in init, read by join
    private var thread = pthread_t()
    private final class Flag: Sendable { let value = Atomic<Bool>(false) }
    private let finished = Flag()

    private final class Box: @unchecked Sendable {  // handed to exactly one thread
        let body: @Sendable () -> Void
        let done: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void, _ done: @escaping @Sendable () -> Void) { self.body = body; self.done = done }
    }

    init(_ body: @escaping @Sendable () -> Void) {
        let flag = finished
        let box = Unmanaged.passRetained(Box(body, { flag.value.store(true, ordering: .releasing) })).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            box.done()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    var isFinished: Bool { finished.value.load(ordering: .acquiring) }

    /// Joins if the thread finishes before `deadline`; otherwise returns
    /// false and the thread stays joinable (or can be `abandon`ed).
    func join(before deadline: ContinuousClock.Instant) -> Bool {
        while !isFinished {
            if ContinuousClock.now >= deadline { return false }
            usleep(2000)
        }
        pthread_join(thread, nil)
        return true
    }

    /// Gives up on a thread that is still running: it is detached and left to finish on its own.
    func abandon() {
        pthread_detach(thread)
    }
}

func sleepSeconds(_ s: Double) {
    guard s > 0 else { return }
    var request = timespec(tv_sec: Int(s), tv_nsec: Int((s - Double(Int(s))) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// SplitMix64: a small deterministic generator, so that a scenario's (or a
/// test's) choices repeat from its seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func next(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }
}

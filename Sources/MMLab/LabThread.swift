// SPDX-License-Identifier: Apache-2.0
import Glibc
import MM
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

extension SeededGenerator {
    mutating func next(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }
}

// SPDX-License-Identifier: Apache-2.0

/// Rate limit of failure reports: at most `burst` per `interval`; the next
/// report says how many were dropped. Kernel analogue: `DEFINE_RATELIMIT_STATE`.
final class ReportRateLimiter: Sendable {
    private struct State: Sendable {
        var windowStart: ContinuousClock.Instant
        var inWindow = 0
        var suppressed = 0
    }
    private let state: Locked<State>
    private let burst: Int
    private let interval: Duration

    init(burst: Int = 10, interval: Duration = .seconds(5)) {
        self.burst = burst
        self.interval = interval
        state = Locked(State(windowStart: .now))
    }

    /// `nil` when the report must be dropped; otherwise how many were dropped before it.
    func admit() -> Int? {
        state.withLock { s in
            let now = ContinuousClock.now
            if now - s.windowStart >= interval {
                s.windowStart = now
                s.inWindow = 0
            }
            guard s.inWindow < burst else {
                s.suppressed += 1
                return nil
            }
            s.inWindow += 1
            defer { s.suppressed = 0 }
            return s.suppressed
        }
    }
}

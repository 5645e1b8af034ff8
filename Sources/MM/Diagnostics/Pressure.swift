// SPDX-License-Identifier: Apache-2.0
import Glibc

/// Memory pressure in the kernel's PSI form: the share of time in which
/// *some* thread, or *all* threads using the system (*full*), were stalled in
/// allocation (reclaiming or waiting for memory), as averages over 10, 60 and
/// 300 seconds, plus the total stall time.
/// Kernel analogue: `/proc/pressure/memory`.
public struct PressureStatistics: Sendable, Hashable {
    /// One line of `/proc/pressure/memory`: the share of time stalled, averaged three ways, and the total.
    public struct Line: Sendable, Hashable {
        /// Percent of time, exponentially averaged over 10 s, 60 s and 300 s.
        public var avg10: Double, avg60: Double, avg300: Double
        /// Total stall time.
        public var totalMicroseconds: Int
    }
    /// Time in which at least one thread was stalled in allocation.
    public var some: Line
    /// Time in which every thread using the system was stalled.
    public var full: Line

    /// `/proc/pressure/memory` format.
    public var rendered: String {
        func fixed2(_ x: Double) -> String {
            let hundredths = Int((x * 100).rounded())
            let fraction = hundredths % 100
            return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
        }
        func line(_ name: String, _ l: Line) -> String {
            "\(name) avg10=\(fixed2(l.avg10)) avg60=\(fixed2(l.avg60)) avg300=\(fixed2(l.avg300)) total=\(l.totalMicroseconds)\n"
        }
        return line("some", some) + line("full", full)
    }
}

/// Tracks stalled threads. "Full" counts time in which the stalled threads
/// are all the threads currently attached to the system (its non-idle
/// population, as far as the allocator can see).
final class PressureTracker: Sendable {
    private struct State: Sendable {
        var stalled = 0
        var population = 1
        var lastChange = ContinuousClock.now
        var someTotal = Duration.zero, fullTotal = Duration.zero
        var lastAverage = ContinuousClock.now
        var someAtAverage = Duration.zero, fullAtAverage = Duration.zero
        var some = (0.0, 0.0, 0.0), full = (0.0, 0.0, 0.0)
    }
    private let state = Locked(State())
    private let populationProvider: @Sendable () -> Int

    init(population: @escaping @Sendable () -> Int) {
        populationProvider = population
    }

    private static func accumulate(_ s: inout State, now: ContinuousClock.Instant) {
        let dt = now - s.lastChange
        if s.stalled > 0 { s.someTotal += dt }
        if s.stalled > 0 && s.stalled >= s.population { s.fullTotal += dt }
        s.lastChange = now
    }

    func enterStall() {
        let population = max(1, populationProvider())
        state.withLock { s in
            PressureTracker.accumulate(&s, now: .now)
            s.stalled += 1
            s.population = population
        }
    }

    /// In a forked child: the parent's stalled threads do not exist here.
    func resetAfterFork() {
        state.withLock { s in
            PressureTracker.accumulate(&s, now: .now)
            s.stalled = 0
        }
    }

    func exitStall() {
        state.withLock { s in
            PressureTracker.accumulate(&s, now: .now)
            s.stalled -= 1
        }
    }

    func snapshot() -> PressureStatistics {
        state.withLock { s in
            let now = ContinuousClock.now
            PressureTracker.accumulate(&s, now: now)
            let dt = now - s.lastAverage
            func seconds(of d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
            let elapsed = seconds(of: dt)
            if elapsed > 0.05 {
                let somePct = min(100, 100 * seconds(of: s.someTotal - s.someAtAverage) / elapsed)
                let fullPct = min(100, 100 * seconds(of: s.fullTotal - s.fullAtAverage) / elapsed)
                func ema(_ avg: Double, _ pct: Double, _ window: Double) -> Double {
                    let f = exp(-elapsed / window)
                    return avg * f + pct * (1 - f)
                }
                s.some = (ema(s.some.0, somePct, 10), ema(s.some.1, somePct, 60), ema(s.some.2, somePct, 300))
                s.full = (ema(s.full.0, fullPct, 10), ema(s.full.1, fullPct, 60), ema(s.full.2, fullPct, 300))
                s.lastAverage = now
                s.someAtAverage = s.someTotal
                s.fullAtAverage = s.fullTotal
            }
            func micros(_ d: Duration) -> Int { Int(d.components.seconds) * 1_000_000 + Int(d.components.attoseconds / 1_000_000_000_000) }
            return PressureStatistics(
                some: .init(avg10: s.some.0, avg60: s.some.1, avg300: s.some.2, totalMicroseconds: micros(s.someTotal)),
                full: .init(avg10: s.full.0, avg60: s.full.1, avg300: s.full.2, totalMicroseconds: micros(s.fullTotal)))
        }
    }
}

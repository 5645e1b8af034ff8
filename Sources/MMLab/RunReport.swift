// SPDX-License-Identifier: Apache-2.0

/// What one run of a scenario under one semantics measured.
public struct RunReport: Codable, Sendable {
    /// The semantics of `guarantee: semantics` operations in this run.
    public var semantics: CommitSemantics
    /// How long the run took, s.
    public var seconds: Double
    /// Operations marked `transaction: true` that completed.
    public var transactions: Int
    /// All completed operations.
    public var operations: Int
    /// The scenario's progress measure: `transactions`, or `operations` when no operation is a transaction.
    public var progress: Int = 0
    /// What the scenario calls a unit of progress (`Scenario.progressName`), e.g. `commits`, `requests`.
    public var progressName = "transactions"
    /// Latency of the allocations of operations with a guarantee (all operations' if none has one), µs.
    public var latencyP50Microseconds: Double
    /// 99th percentile of the same latencies, µs.
    public var latencyP99Microseconds: Double
    /// The longest of them, µs.
    public var latencyMaxMicroseconds: Double
    /// `allocationStall` events ("possible memory allocation deadlock").
    public var stallReports: Int
    /// Groups the OOM handler killed.
    public var oomKills: Int
    /// `.atomic` allocations that returned nil.
    public var atomicFailures: Int
    /// Every fallible allocation that returned nil (a retry loop's retries included).
    public var allocationFailures: Int
    /// The lowest free memory sampled, and the `min` watermark.
    public var lowestFreeBytes: Int
    /// The `min` watermark of the run's arena.
    public var minWatermarkBytes: Int
    /// The `low` watermark.
    public var lowWatermarkBytes: Int
    /// The `high` watermark.
    public var highWatermarkBytes: Int
    /// Time requests spent stalled in the slow path (reclaiming or waiting), ms (pressure "some" total).
    public var reclaimMilliseconds: Double
    /// Direct reclaim passes.
    public var directReclaims: Int
    /// Background reclaim passes.
    public var backgroundReclaims: Int
    /// The deadlock watchdog's verdict.
    public var deadlocked: Bool
    /// The verdict in words (completed, deadlocked, rescued).
    public var verdict: String
    /// Longest time without a completed transaction, s.
    public var longestGapSeconds: Double
    /// Whether threads had to be rescued (memory freed behind the shrinkers' locks) to end the run.
    public var neededRescue: Bool
    /// Free memory over time, for the timeline.
    public var timeline: [Sample]
    /// Moments worth marking on the timeline.
    public var markers: [Marker]
    /// Each group's limits and what happened to it (empty without groups).
    public var groups: [GroupSummary] = []
    /// The process limit over the run, when it moved (`set-limit`, a pressure monitor).
    public var limit: LimitSummary? = nil
    /// Each OOM-killed group that had to allocate to exit: how long its exit took, nil if it never finished.
    public var victimExits: [VictimExit] = []
    /// `oomVictimStuck` reports: victims that had not released memory within `oomReapTimeout`.
    public var victimStuckReports = 0
    /// Live allocations per call site at the end of the run, in allocinfo
    /// format with the scenario's names (`<worker>/<operation>`,
    /// `<cache>/fill`, `events/<n> <action>`, `<group>/exit`); nil unless
    /// the run had allocation profiling on.
    public var allocinfo: String? = nil

    /// One killed group's exit.
    public struct VictimExit: Codable, Sendable {
        /// The group.
        public var group: String
        /// Seconds from the kill to its memory released; nil: it never got there.
        public var seconds: Double?
    }

    /// Operations (`worker/n`) the reclaim-recursion checker reported: they may
    /// enter reclaim that needs a lock they hold.
    public var recursionSites: [String] = []
    /// Operations that, by the scenario's own declarations, hold a lock a
    /// shrinker takes without a scope excluding that shrinker's domain.
    public var sitesNeedingScope: [String] = []

    /// One group over the run.
    public struct GroupSummary: Codable, Sendable {
        /// The group's name.
        public var name: String
        /// Its limits, bytes (nil: none).
        public var min: Int, low: Int, high: Int?, max: Int?
        /// The highest and the last usage sampled, and the lowest after the group first held memory.
        public var peakUsage: Int, finalUsage: Int, lowestUsage: Int
        /// `memory.events` at the end.
        public var events: [String: Int]
        /// Fallible allocations charged to it that returned nil.
        public var failures: Int
    }

    /// The process limit over the run.
    public struct LimitSummary: Codable, Sendable {
        /// At the start, at its lowest, and at the end, bytes.
        public var start: Int, lowest: Int, end: Int
        /// Pressure events the monitor saw.
        public var pressureEvents: Int
        /// Resident bytes of the arena at the start of the run and at the last sample at the lowest limit.
        public var residentAtStart: Int, residentAtLowest: Int
    }

    /// Free memory at one moment.
    public struct Sample: Codable, Sendable {
        /// Seconds into the run.
        public var t: Double
        /// Free bytes of the arena then.
        public var freeBytes: Int
        /// The process limit then (nil in reports written before limits existed).
        public var limitBytes: Int? = nil
        /// Transactions (or, in scenarios without transactions, operations) completed by then.
        public var progress: Int? = nil
    }

    /// Something that happened at one moment.
    public struct Marker: Codable, Sendable {
        /// What happened: a reclaim pass, a stall report, an OOM kill, the deadlock verdict.
        public enum Kind: String, Codable, Sendable {
            /// A reclaim pass (reports written before passes were told apart).
            case reclaim
            /// Direct reclaim by an allocating thread, background reclaim by the reclaimer.
            case directReclaim, backgroundReclaim
            case stall, oomKill, deadlock
        }
        /// Seconds into the run.
        public var t: Double
        /// What happened.
        public var kind: Kind
    }
}

/// The runs of one scenario side by side, with a conclusion drawn from their numbers.
public struct ScenarioReport: Codable, Sendable {
    /// The scenario's name.
    public var scenario: String
    /// A one-line description, as events and reports print it.
    public var description: String
    /// One run per semantics, in the scenario's order.
    public var runs: [RunReport]
    /// Plain-language sentences computed from the runs.
    public var conclusion: [String]
    /// Whether some operation takes the run's semantics (otherwise the runs are labelled "run").
    public var comparesSemantics: Bool

    init(scenario: Scenario, runs: [RunReport]) {
        self.scenario = scenario.name
        self.description = scenario.description
        self.runs = runs
        comparesSemantics = (scenario.semantics?.count ?? 1) > 1
            || scenario.workers.contains { $0.operations.contains { $0.guarantee == "semantics" } }
        self.conclusion = ScenarioReport.conclude(runs, labelled: comparesSemantics)
            + ScenarioReport.concludeBudgets(runs, labelled: comparesSemantics)
    }

    /// Sentences about groups at their limits and the process limit, from the numbers only.
    static func concludeBudgets(_ runs: [RunReport], labelled: Bool) -> [String] {
        var out: [String] = []
        func mib(_ b: Int) -> String { String(format1(Double(b) / 1048576)) + " MiB" }
        for r in runs {
            let who = labelled ? "\(r.semantics.rawValue): " : ""
            for g in r.groups {
                var parts = ["usage peak \(mib(g.peakUsage)), lowest \(mib(g.lowestUsage)), end \(mib(g.finalUsage))"]
                if let max = g.max {
                    let held = g.peakUsage <= max
                    parts.append("\(held ? "never above" : "ABOVE") its max of \(mib(max))"
                                 + ((g.events["max"] ?? 0) > 0 ? " (\(g.events["max"]!) charges found it at max" : " (never reached")
                                 + (g.failures > 0 ? ", \(g.failures) of its requests failed there)" : ")"))
                }
                if let high = g.high, (g.events["high"] ?? 0) > 0 {
                    parts.append("\(g.events["high"]!) requests throttled above its high of \(mib(high))")
                }
                let protection = Swift.max(g.min, g.low)
                if protection > 0 {
                    let kept = g.lowestUsage >= Swift.min(protection, g.peakUsage)
                    parts.append("protected by \(g.min > 0 ? "min" : "low") \(mib(protection)): "
                                 + (kept ? "reclaim never took it below that (or below its own peak when smaller)" : "reclaimed below it")
                                 + ((g.events["low"] ?? 0) > 0 ? ", \(g.events["low"]!) times as a last resort" : ""))
                }
                if (g.events["oom_kill"] ?? 0) > 0 { parts.append("\(g.events["oom_kill"]!) OOM kill(s) in its subtree") }
                if !parts.isEmpty { out.append("\(who)group \(g.name): " + parts.joined(separator: "; ") + ".") }
            }
            if let l = r.limit {
                var s = "\(who)process limit \(mib(l.start)) → lowest \(mib(l.lowest)) → \(mib(l.end)) at the end"
                if l.pressureEvents > 0 { s += ", moved by \(l.pressureEvents) pressure events" }
                s += "; arena resident \(mib(l.residentAtStart)) at the start, \(mib(l.residentAtLowest)) at the lowest limit"
                out.append(s + ".")
            }
        }
        return out
    }

    /// The column label of a run.
    func label(_ run: RunReport) -> String { comparesSemantics ? run.semantics.rawValue : "run" }

    /// Sentences about what each semantics did, from the numbers only.
    static func conclude(_ runs: [RunReport], labelled: Bool = true) -> [String] {
        var out: [String] = []
        func mib(_ b: Int) -> String { String(format1(Double(b) / 1048576)) + " MiB" }
        for r in runs {
            var s = "\(labelled ? r.semantics.rawValue : "The run"): \(r.progress) \(r.progressName)"
            if r.deadlocked {
                s += "; deadlocked — \(r.verdict)"
                if r.stallReports > 0 { s += "; \(r.stallReports) stall reports said so while it hung" }
            } else {
                s += "; kept making progress (longest gap \(format1(r.longestGapSeconds)) s)"
            }
            // With a moving limit the watermarks moved too: free memory below the final
            // min says nothing about the reserves then.
            if r.limit == nil && r.lowestFreeBytes < r.minWatermarkBytes {
                s += "; dipped \(mib(r.minWatermarkBytes - r.lowestFreeBytes)) below the min watermark into the reserves"
            }
            if r.oomKills > 0 { s += "; \(r.oomKills) OOM kill\(r.oomKills == 1 ? "" : "s")" }
            if r.atomicFailures > 0 { s += "; \(r.atomicFailures) atomic allocation failures" }
            if r.semantics == .retryLoop && r.allocationFailures > 0 {
                s += "; the caller's loop absorbed \(r.allocationFailures) failed attempts"
            }
            out.append(s + ".")
        }
        guard runs.count > 1 else { return out }
        let best = runs.max { ($0.deadlocked ? 0 : 1, $0.progress) < ($1.deadlocked ? 0 : 1, $1.progress) }!
        let stuck = runs.filter(\.deadlocked).map(\.semantics.rawValue)
        if !stuck.isEmpty && !best.deadlocked {
            var s = "Only waiting is not enough here: \(stuck.joined(separator: " and ")) deadlocked, while \(best.semantics.rawValue) completed \(best.progress) \(best.progressName)"
            if best.lowestFreeBytes < best.minWatermarkBytes || best.atomicFailures > 0 {
                s += " by spending reserves"
                if best.atomicFailures > 0 { s += " that atomic allocations then lacked (\(best.atomicFailures) failed)" }
            }
            out.append(s + ".")
        } else if stuck.count == runs.count {
            out.append("Every semantics deadlocked: the fix is not in the allocator but in the caller (release the lock before waiting, or let the shrinker skip when the lock is held).")
        } else {
            let least = runs.min { $0.latencyMaxMicroseconds < $1.latencyMaxMicroseconds }!
            out.append("No semantics deadlocked; \(best.semantics.rawValue) completed the most \(best.progressName) (\(best.progress)), \(least.semantics.rawValue) had the lowest worst-case allocation latency (\(format1(least.latencyMaxMicroseconds / 1000)) ms).")
        }
        return out
    }
}

func format1(_ x: Double) -> String {
    let scaled = (x * 10).rounded() / 10
    return scaled == scaled.rounded() ? String(Int(scaled)) + ".0" : String(scaled)
}

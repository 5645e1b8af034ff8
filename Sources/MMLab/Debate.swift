// SPDX-License-Identifier: Apache-2.0

/// The 2021 `__GFP_NOFAIL` thread, claim by claim: each claim is a built-in
/// scenario run under the semantics it is about, and a verdict computed
/// from the numbers of that run — never written in advance.
/// (`mmctl debate`; the thread is in `shared/reference/kernel-mm.md`.)
public struct DebateClaim: Sendable {
    /// The claim's number in the issue's list (0: the flagship).
    public var number: Int
    /// Who made it.
    public var who: String
    /// What was claimed, in the thread's words where possible.
    public var claim: String
    /// The built-in scenario that tests it.
    public var scenario: String
    /// Turns the runs into the measured numbers and the verdict.
    let judge: @Sendable ([RunReport]) -> (numbers: String, verdict: String)
}

/// One claim with what its run measured.
public struct DebateRow: Codable, Sendable {
    /// The claim's number.
    public var number: Int
    /// Who made it.
    public var who: String
    /// What was claimed.
    public var claim: String
    /// The scenario run.
    public var scenario: String
    /// The scenario's timelines (every run on one scale), as SVG; not in the JSON.
    public var svg: String = ""

    private enum CodingKeys: String, CodingKey { case number, who, claim, scenario, numbers, verdict }
    /// The numbers that decide it, per semantics.
    public var numbers: String
    /// The verdict computed from them.
    public var verdict: String
}

/// The debate's claims and their runner.
public enum Debate {
    private static func mib(_ b: Int) -> String { format1(Double(b) / 1048576) + " MiB" }
    private static func ms(_ us: Double) -> String { us >= 1000 ? format1(us / 1000) + " ms" : String(Int(us)) + " µs" }
    private static func run(_ runs: [RunReport], _ s: CommitSemantics) -> RunReport? { runs.first { $0.semantics == s } }
    /// Each run's line of numbers, joined: what every verdict prints as "measured".
    private static func perRun(_ runs: [RunReport], _ line: (RunReport) -> String) -> String {
        runs.map(line).joined(separator: "; ")
    }

    /// The claims, in the order of the issue.
    public static let claims: [DebateClaim] = [
        DebateClaim(
            number: 0, who: "Dave Chinner (XFS)",
            claim: "filesystems want \"retry forever\", not NOFAIL's \"dig into reserves, OOM-kill\" — even where the only reclaimable memory sits behind a lock the transaction holds",
            scenario: "transaction-commit",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) transactions, \(r.deadlocked ? "deadlocked" : "no deadlock"), lowest free \(mib(r.lowestFreeBytes)) (min \(mib(r.minWatermarkBytes))), \(r.atomicFailures) atomic failures"
                }
                let stuck = runs.filter(\.deadlocked).map(\.semantics.rawValue)
                let moving = runs.filter { !$0.deadlocked }
                let verdict: String
                if stuck.isEmpty {
                    verdict = "no semantics deadlocked here"
                } else if moving.isEmpty {
                    verdict = "every semantics deadlocked: the fix is in the caller (drop the lock, or a shrinker that skips when it is held)"
                } else {
                    let best = moving.max { $0.transactions < $1.transactions }!
                    let spent = best.lowestFreeBytes < best.minWatermarkBytes
                    verdict = "waiting alone is not enough here: \(stuck.joined(separator: ", ")) deadlocked; \(best.semantics.rawValue) kept going"
                        + (spent ? " by spending \(mib(best.minWatermarkBytes - best.lowestFreeBytes)) of reserves" : "")
                        + (best.atomicFailures > 0 ? " that \(best.atomicFailures) atomic allocations then lacked" : "")
                }
                return (numbers, verdict)
            }),
        DebateClaim(
            number: 1, who: "Dave Chinner",
            claim: "NOFAIL's \"dig into reserves, drive to OOM\" is \"potentially much more problematic\" than retrying",
            scenario: "reserves-starvation",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) commits, longest stall \(format1(r.longestGapSeconds)) s, lowest free \(mib(r.lowestFreeBytes)) (min \(mib(r.minWatermarkBytes))), \(r.atomicFailures) atomic failures, \(r.oomKills) OOM kills"
                }
                guard let wait = run(runs, .retryForever), let nofail = run(runs, .useReserves) else { return (numbers, "needs retryForever and useReserves runs") }
                let dip = max(0, nofail.minWatermarkBytes - nofail.lowestFreeBytes)
                var parts: [String] = []
                parts.append("retryForever waited the spike out (longest stall \(format1(wait.longestGapSeconds)) s) and left the reserves alone")
                parts.append("useReserves stalled \(format1(nofail.longestGapSeconds)) s and spent \(mib(dip)) of the reserves")
                if nofail.atomicFailures > wait.atomicFailures {
                    parts.append("the reserves it took cost \(nofail.atomicFailures - wait.atomicFailures) atomic failures")
                } else {
                    parts.append("no atomic allocation failed: the atomic tier (min/4) sits below what useReserves may take (min/2)")
                }
                if nofail.oomKills > 0 { parts.append("\(nofail.oomKills) OOM kills") }
                return (numbers, parts.joined(separator: "; "))
            }),
        DebateClaim(
            number: 2, who: "Michal Hocko",
            claim: "\"emergency access to memory reserves helped in OOM situations\": an OOM victim may need memory to exit",
            scenario: "oom-victim-exit",
            judge: { runs in
                func exit(_ r: RunReport) -> String {
                    guard let e = r.victimExits.first else { return "no victim had to exit" }
                    return e.seconds.map { "victim \(e.group) exited in \(ms($0 * 1e6))" } ?? "victim \(e.group) never exited"
                }
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) commits, longest stall \(format1(r.longestGapSeconds)) s, \(r.oomKills) OOM kills, \(exit(r)), \(r.victimStuckReports) stuck-victim reports"
                }
                guard let tier = run(runs, .useReserves), let none = run(runs, .noVictimReserve) else { return (numbers, "needs useReserves and noVictimReserve runs") }
                let withTier = tier.victimExits.first?.seconds ?? nil
                let without = none.victimExits.first?.seconds ?? nil
                let verdict: String
                switch (withTier, without) {
                case (let a?, nil):
                    verdict = "the .oomVictim reserve let the victim allocate its way out in \(ms(a * 1e6)) and commits resumed (longest stall \(format1(tier.longestGapSeconds)) s); without it the victim never exited (\(none.victimStuckReports) stuck reports) and commits stalled up to \(format1(none.longestGapSeconds)) s — the claim holds"
                case (let a?, let b?) where b > a:
                    verdict = "with the .oomVictim reserve the victim allocated its way out in \(ms(a * 1e6)) and commits stalled at most \(format1(tier.longestGapSeconds)) s; without it the victim needed \(ms(b * 1e6)) (\(none.victimStuckReports) stuck-victim reports) and commits stalled \(format1(none.longestGapSeconds)) s — the claim holds"
                case (let a?, let b?):
                    verdict = "the reserve made no difference here: the victim exited in \(ms(a * 1e6)) with it, \(ms(b * 1e6)) without"
                case (nil, _):
                    verdict = tier.oomKills == 0 ? "no OOM kill happened: the scenario did not reach OOM" : "even with the reserve the victim did not exit"
                }
                return (numbers, verdict)
            }),
        DebateClaim(
            number: 3, who: "Dave Chinner",
            claim: "these subsystems \"just aren't failing or deadlocking with such loops\" in production",
            scenario: "retry-loop-production",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) transactions, p50 \(ms(r.latencyP50Microseconds)), p99 \(ms(r.latencyP99Microseconds)), max \(ms(r.latencyMaxMicroseconds))"
                }
                let stuck = runs.filter(\.deadlocked)
                if !stuck.isEmpty {
                    return (numbers, "\(stuck.map(\.semantics.rawValue).joined(separator: ", ")) deadlocked even with memory reclaimable outside the lock")
                }
                let worst = runs.max { $0.latencyMaxMicroseconds < $1.latencyMaxMicroseconds }!
                let best = runs.min { $0.latencyMaxMicroseconds < $1.latencyMaxMicroseconds }!
                return (numbers, "with memory reclaimable outside the locked domain no semantics failed or deadlocked — the claim holds here; worst-case latency ranged from \(ms(best.latencyMaxMicroseconds)) (\(best.semantics.rawValue)) to \(ms(worst.latencyMaxMicroseconds)) (\(worst.semantics.rawValue))")
            }),
        DebateClaim(
            number: 4, who: "Dave Chinner / Michal Hocko",
            claim: "kvmalloc and GFP_NOFS: a filesystem transaction needs large buffers in a NOFS context",
            scenario: "kvmalloc-nofs",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) transactions, \(r.allocationFailures) failed allocations, p99 \(ms(r.latencyP99Microseconds))"
                }
                guard let ours = run(runs, .retryForever), let old = run(runs, .kernel2021) else { return (numbers, "needs retryForever and kernel2021 runs") }
                let verdict = ours.allocationFailures < old.allocationFailures
                    ? "swift-mm's kvmalloc falls back to vmalloc in the NOFS scope: \(ours.transactions) transactions, \(ours.allocationFailures) failures; with kernel-2021 flags (no vmalloc under GFP_NOFS) \(old.transactions) transactions and \(old.allocationFailures) failures on the same fragmented arena"
                    : "no difference on this arena: the fragmentation left contiguous megabytes free"
                return (numbers, verdict)
            }),
        DebateClaim(
            number: 5, who: "Michal Hocko",
            claim: "a NOFAIL scope around library code that \"decides to allocate (e.g. printk … an optimistic NOWAIT allocation)\"",
            scenario: "nofail-scope-library",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) requests, \(r.allocationFailures) optimistic allocations failed, max latency \(ms(r.latencyMaxMicroseconds)), \(r.stallReports) stall reports"
                }
                guard let r3 = run(runs, .retryForever), let naive = run(runs, .naiveScope) else { return (numbers, "needs retryForever and naiveScope runs") }
                let verdict = naive.latencyMaxMicroseconds > r3.latencyMaxMicroseconds
                    ? "under R3 the optimistic allocations stay optimistic: \(r3.allocationFailures) failed fast and the worst wait was \(ms(r3.latencyMaxMicroseconds)); upgraded by a naive scope they blocked the requests for up to \(ms(naive.latencyMaxMicroseconds))"
                    : "the naive rule cost nothing here (no allocation had to wait)"
                return (numbers, verdict)
            }),
        DebateClaim(
            number: 6, who: "Dave Chinner",
            claim: "turn off direct reclaim in the transaction commit path: \"direct reclaim that can make no progress is actively harmful\"",
            scenario: "commit-no-direct-reclaim",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): \(r.transactions) commits, p50 \(ms(r.latencyP50Microseconds)), p99 \(ms(r.latencyP99Microseconds)), max \(ms(r.latencyMaxMicroseconds)), \(r.directReclaims) direct reclaims"
                }
                guard let direct = run(runs, .retryForever), let off = run(runs, .noDirectReclaim) else { return (numbers, "needs retryForever and noDirectReclaim runs") }
                // A difference counts only beyond 20 %: one run on a shared machine is noisy.
                let better = off.latencyP99Microseconds < 0.8 * direct.latencyP99Microseconds && off.transactions >= direct.transactions
                let worse = direct.latencyP99Microseconds < 0.8 * off.latencyP99Microseconds && direct.transactions >= off.transactions
                let verdict = better
                    ? "without direct reclaim the commits did better: p99 \(ms(off.latencyP99Microseconds)) against \(ms(direct.latencyP99Microseconds)), \(off.transactions) commits against \(direct.transactions) — the claim holds here"
                    : worse
                    ? "direct reclaim helped here: p99 \(ms(direct.latencyP99Microseconds)) with it, \(ms(off.latencyP99Microseconds)) without — the claim does not hold here"
                    : "no difference beyond 20 %: p99 \(ms(direct.latencyP99Microseconds)) with direct reclaim, \(ms(off.latencyP99Microseconds)) without; \(direct.transactions) against \(off.transactions) commits — the shrinker deadline bounds what a stuck shrinker costs a commit"
                return (numbers, verdict)
            }),
        DebateClaim(
            number: 8, who: "Michal Hocko",
            claim: "the NOFS scope \"experiment was much less successful than I hoped\": thousands of direct NOFS users, because nobody knows where the scopes belong",
            scenario: "scope-finder",
            judge: { runs in
                let numbers = perRun(runs) { r in
                    "\(r.semantics.rawValue): reported \(r.recursionSites.isEmpty ? "nothing" : r.recursionSites.joined(separator: ", ")) (needing a scope by the scenario's declarations: \(r.sitesNeedingScope.joined(separator: ", "))), \(r.directReclaims + r.backgroundReclaims) reclaim passes"
                }
                guard let plain = run(runs, .retryForever), let fixed = run(runs, .scopesAdded) else { return (numbers, "needs retryForever and scopesAdded runs") }
                let found = Set(plain.recursionSites), needed = Set(plain.sitesNeedingScope)
                let verdict: String
                if found == needed && fixed.recursionSites.isEmpty {
                    verdict = "the checker named every place that needs a scope (\(needed.sorted().joined(separator: ", "))) and nothing else, with \(plain.directReclaims + plain.backgroundReclaims) reclaim passes; with those scopes added it reported nothing"
                } else {
                    verdict = "the checker missed \(needed.subtracting(found).sorted()) and wrongly named \(found.subtracting(needed).sorted()); after adding the scopes it still reported \(fixed.recursionSites)"
                }
                return (numbers, verdict)
            }),
    ]

    /// Runs every claim's scenario with durations and event times scaled by
    /// `scale` (1: as built in) and judges it. `progress(claim, fraction)` as
    /// for `ScenarioRunner.run`.
    public static func run(scale: Double = 1,
                           progress: (@Sendable (Int, CommitSemantics, Double) -> Void)? = nil) throws -> [DebateRow] {
        var rows: [DebateRow] = []
        for claim in claims {
            guard let yaml = BuiltinScenarios.yaml(named: claim.scenario) else { continue }
            let scenario = try ScenarioLoader.load(yaml: yaml, source: claim.scenario).scaled(by: scale)
            let number = claim.number
            var forward: (@Sendable (CommitSemantics, Double) -> Void)?
            if let progress {
                forward = { semantics, fraction in progress(number, semantics, fraction) }
            }
            let report = try ScenarioRunner.run(scenario, progress: forward)
            var row = judge(claim, report.runs)
            row.svg = report.svg
            rows.append(row)
        }
        return rows
    }

    /// A claim's row from its runs.
    public static func judge(_ claim: DebateClaim, _ runs: [RunReport]) -> DebateRow {
        let (numbers, verdict) = claim.judge(runs)
        return DebateRow(number: claim.number, who: claim.who, claim: claim.claim, scenario: claim.scenario,
                         numbers: numbers, verdict: verdict)
    }
}

extension Scenario {
    /// The same scenario with its duration, watchdog and event times and
    /// durations multiplied by `factor` (0 < factor ≤ 1 for a quick look).
    public func scaled(by factor: Double) -> Scenario {
        guard factor != 1 else { return self }
        var s = self
        s.duration = Seconds(duration.value * factor)
        if let w = watchdog { s.watchdog = Seconds(max(0.5, w.value * factor)) }
        s.events = events?.map { e in
            var e = e
            e.at = Seconds(e.at.value * factor)
            if let d = e.duration { e.duration = Seconds(d.value * factor) }
            return e
        }
        return s
    }
}

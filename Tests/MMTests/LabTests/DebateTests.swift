// SPDX-License-Identifier: Apache-2.0
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import MM
@testable import MMLab
import Testing

@Suite("The debate: verdicts computed from numbers")
struct DebateTests {
    /// A run with the numbers a verdict reads; the rest neutral.
    func run(_ s: CommitSemantics, tx: Int = 100, deadlocked: Bool = false, lowest: Int = 8 << 20, atomic: Int = 0,
             failures: Int = 0, maxLatency: Double = 1000, gap: Double = 0.01, stalls: Int = 0) -> RunReport {
        RunReport(semantics: s, seconds: 5, transactions: tx, operations: tx, progress: tx, latencyP50Microseconds: 5,
                  latencyP99Microseconds: 50, latencyMaxMicroseconds: maxLatency, stallReports: stalls,
                  oomKills: 0, atomicFailures: atomic, allocationFailures: failures, lowestFreeBytes: lowest,
                  minWatermarkBytes: 8 << 20, lowWatermarkBytes: 10 << 20, highWatermarkBytes: 12 << 20,
                  reclaimMilliseconds: 1, directReclaims: 0, backgroundReclaims: 0, deadlocked: deadlocked,
                  verdict: "", longestGapSeconds: gap, neededRescue: false, timeline: [], markers: [])
    }

    func claim(_ scenario: String) -> DebateClaim { Debate.claims.first { $0.scenario == scenario }! }

    @Test("every claim names a built-in scenario that runs the semantics its verdict reads")
    func claimsAreWired() throws {
        for c in Debate.claims {
            let yaml = try #require(BuiltinScenarios.yaml(named: c.scenario), "claim \(c.number): no scenario \(c.scenario)")
            let s = try ScenarioLoader.load(yaml: yaml, source: c.scenario)
            #expect((s.semantics ?? []).count >= 2, "claim \(c.number) compares semantics")
        }
    }

    @Test("the debate's page is well-formed XHTML with a table row, a verdict and the timelines of every claim")
    func htmlPage() throws {
        let scenario = try ScenarioLoader.load(yaml: BuiltinScenarios.yaml(named: "reserves-starvation")!, source: "reserves-starvation")
        var rows: [DebateRow] = []
        for c in Debate.claims.prefix(3) {
            var row = Debate.judge(c, [run(.retryForever, gap: 2), run(.useReserves, lowest: 4 << 20)])
            row.svg = ScenarioReport(scenario: scenario, runs: [run(.retryForever), run(.useReserves)]).svg
            row.verdict += " <&>"   // escaped, not markup
            rows.append(row)
        }
        let page = Debate.html(rows)
        let counter = XMLDocumentSummary(page)
        #expect(counter.parsed, "\(counter.error)")
        #expect(counter.elements["svg"] == rows.count && counter.elements["h2"] == rows.count)
        #expect(counter.elements["tr"] == rows.count + 1)
        for r in rows { #expect(counter.texts.contains(r.verdict) && counter.texts.contains(r.claim)) }
    }

    @Test("claim 1: reserves spent and atomic failures decide; numbers name each semantics")
    func reservesVerdict() {
        let quiet = Debate.judge(claim("reserves-starvation"), [run(.retryForever, gap: 2), run(.useReserves, lowest: 4 << 20, gap: 0.1)])
        #expect(quiet.numbers.contains("retryForever:") && quiet.numbers.contains("useReserves:"))
        #expect(quiet.verdict.contains("spent 4.0 MiB of the reserves") && quiet.verdict.contains("no atomic allocation failed"))
        let starved = Debate.judge(claim("reserves-starvation"), [run(.retryForever), run(.useReserves, lowest: 1 << 20, atomic: 37)])
        #expect(starved.verdict.contains("cost 37 atomic failures"))
    }

    @Test("claim 0 and 3: deadlocks and latency decide")
    func flagshipAndLoops() {
        let flagship = Debate.judge(claim("transaction-commit"), [run(.retryForever, tx: 3, deadlocked: true), run(.useReserves, lowest: 7 << 20)])
        #expect(flagship.verdict.hasPrefix("waiting alone is not enough here: retryForever deadlocked; useReserves kept going by spending 1.0 MiB"))
        let loops = Debate.judge(claim("retry-loop-production"), [run(.retryForever, maxLatency: 2000), run(.retryLoop, maxLatency: 9000)])
        #expect(loops.verdict.contains("the claim holds here") && loops.verdict.contains("9.0 ms (retryLoop)"))
        let stuck = Debate.judge(claim("retry-loop-production"), [run(.retryForever, deadlocked: true), run(.retryLoop)])
        #expect(stuck.verdict.hasPrefix("retryForever deadlocked"))
    }

    @Test("claims 4 and 5: failures and worst-case latency decide")
    func kvmallocAndScope() {
        let kv = Debate.judge(claim("kvmalloc-nofs"), [run(.retryForever, tx: 60), run(.kernel2021, tx: 0, failures: 60)])
        #expect(kv.verdict.contains("60 transactions, 0 failures") && kv.verdict.contains("0 transactions and 60 failures"))
        let same = Debate.judge(claim("kvmalloc-nofs"), [run(.retryForever), run(.kernel2021)])
        #expect(same.verdict.hasPrefix("no difference"))
        let scope = Debate.judge(claim("nofail-scope-library"),
                                 [run(.retryForever, failures: 2800, maxLatency: 5000), run(.naiveScope, maxLatency: 1_700_000, stalls: 6)])
        #expect(scope.verdict.contains("2800 failed fast") && scope.verdict.contains("up to 1700.0 ms"))
    }

    @Test("claim 6: commit latency and throughput with and without direct reclaim decide")
    func directReclaimVerdict() {
        func r(_ s: CommitSemantics, tx: Int, p99: Double) -> RunReport {
            var x = run(s, tx: tx)
            x.latencyP99Microseconds = p99
            return x
        }
        let helps = Debate.judge(claim("commit-no-direct-reclaim"), [r(.retryForever, tx: 100, p99: 50_000), r(.noDirectReclaim, tx: 120, p99: 900)])
        #expect(helps.verdict.hasPrefix("without direct reclaim the commits did better") && helps.verdict.contains("the claim holds here"))
        let neutral = Debate.judge(claim("commit-no-direct-reclaim"), [r(.retryForever, tx: 100, p99: 40), r(.noDirectReclaim, tx: 99, p99: 43)])
        #expect(neutral.verdict.hasPrefix("no difference beyond 20 %"))
        let hurts = Debate.judge(claim("commit-no-direct-reclaim"), [r(.retryForever, tx: 100, p99: 40), r(.noDirectReclaim, tx: 90, p99: 400)])
        #expect(hurts.verdict.hasPrefix("direct reclaim helped here"))
    }

    @Test("claim 8: the checker's findings against the places the scenario declares as needing a scope")
    func scopeFinderVerdict() {
        func r(_ s: CommitSemantics, found: [String]) -> RunReport {
            var x = run(s)
            x.recursionSites = found
            x.sitesNeedingScope = ["btree/2", "journal/2"]
            return x
        }
        let exact = Debate.judge(claim("scope-finder"), [r(.retryForever, found: ["btree/2", "journal/2"]), r(.scopesAdded, found: [])])
        #expect(exact.verdict.hasPrefix("the checker named every place that needs a scope (btree/2, journal/2) and nothing else"))
        let wrong = Debate.judge(claim("scope-finder"), [r(.retryForever, found: ["btree/1", "journal/2"]), r(.scopesAdded, found: [])])
        #expect(wrong.verdict.contains("missed [\"btree/2\"]") && wrong.verdict.contains("wrongly named [\"btree/1\"]"))
    }

    @Test("scope-finder, run for real for a moment: the checker names exactly the declared places, and nothing once the scopes are added")
    func scopeFinderRun() throws {
        let yaml = BuiltinScenarios.yaml(named: "scope-finder")!.replacingAll("duration: 1s", "duration: 300ms")
        let report = try ScenarioRunner.run(try ScenarioLoader.load(yaml: yaml, source: "scope-finder"))
        let plain = try #require(report.runs.first { $0.semantics == .retryForever })
        let fixed = try #require(report.runs.first { $0.semantics == .scopesAdded })
        #expect(plain.sitesNeedingScope == ["btree/2", "journal/2"])
        #expect(plain.recursionSites == plain.sitesNeedingScope)
        #expect(fixed.recursionSites.isEmpty)
    }

    @Test("claim 2: the victim's exit time with and without the reserve decides")
    func victimExitVerdict() {
        func r(_ s: CommitSemantics, exit: Double?, gap: Double, stuck: Int) -> RunReport {
            var x = run(s, gap: gap)
            x.oomKills = 1
            x.victimExits = [RunReport.VictimExit(group: "app", seconds: exit)]
            x.victimStuckReports = stuck
            return x
        }
        let never = Debate.judge(claim("oom-victim-exit"), [r(.useReserves, exit: 0.09, gap: 0.02, stuck: 0), r(.noVictimReserve, exit: nil, gap: 4, stuck: 1)])
        #expect(never.verdict.contains("never exited (1 stuck reports)") && never.verdict.hasSuffix("the claim holds"))
        let slower = Debate.judge(claim("oom-victim-exit"), [r(.useReserves, exit: 0.09, gap: 0.02, stuck: 0), r(.noVictimReserve, exit: 2.1, gap: 1.9, stuck: 1)])
        #expect(slower.verdict.contains("in 90.0 ms") && slower.verdict.contains("needed 2100.0 ms"))
        #expect(slower.numbers.contains("victim app exited in 90.0 ms"))
    }

    @Test("kernel2021 and naiveScope are lab semantics a scenario file may name")
    func semanticsDecode() throws {
        let yaml = BuiltinScenarios.yaml(named: "kvmalloc-nofs")!
        #expect(try ScenarioLoader.load(yaml: yaml, source: "k").semantics == [.retryForever, .kernel2021])
        let scaled = try ScenarioLoader.load(yaml: yaml, source: "k").scaled(by: 0.5)
        #expect(scaled.duration.value == 1.5)
    }
}

// SPDX-License-Identifier: Apache-2.0
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import MM
@testable import MMLab
import Testing

/// Runs of small scenarios: real threads and time, so the checks are on
/// what must hold, not on exact counts. Named "Stress" for the TSan run.
@Suite("Scenario runs (Stress)")
struct ScenarioRunTests {
    /// The flagship in miniature, made structural so that it does not depend
    /// on timing: the cache leaves free memory just above `high`, and a
    /// transaction needs 1.5 MiB while holding the journal — it must go below
    /// `min` (2 MiB), and only the cache's shrinker, which needs the journal,
    /// could give memory back.
    static let deadlock = """
    name: mini-commit
    description: the flagship in miniature
    seed: 3
    duration: 3s
    watchdog: 2s
    semantics: [retryForever, useReserves]
    arena:
      capacity: 16MiB
      watermarks: {min: 2MiB, low: 2560KiB, high: 3MiB}
      stallReportInterval: 200ms
    locks:
      - name: journal
    caches:
      - name: inodes
        objectSize: 4KiB
        count: 3200
        domain: filesystem
        lock: journal
    workers:
      - name: tx
        threads: 2
        operations:
          - size: 384KiB
            count: 4
            placement: automatic
            guarantee: semantics
            scopes: [excluding filesystem]
            locks: [journal]
            hold: 10ms
            transaction: true
      - name: net
        operations:
          - size: 64..512
            policy: atomic
            rate: 200
    """

    @Test("retryForever deadlocks behind the journal lock; useReserves commits from the reserves")
    func flagshipInMiniature() throws {
        let scenario = try ScenarioLoader.load(yaml: Self.deadlock, source: "mini")
        let report = try ScenarioRunner.run(scenario)
        #expect(report.runs.map(\.semantics) == [.retryForever, .useReserves])
        let forever = report.runs[0], reserves = report.runs[1]
        let (foreverDeadlocked, foreverRescued, foreverStalls) = (forever.deadlocked, forever.neededRescue, forever.stallReports)
        let (foreverLowest, foreverMin) = (forever.lowestFreeBytes, forever.minWatermarkBytes)
        #expect(foreverDeadlocked, "\(forever.verdict)")
        #expect(foreverRescued)
        #expect(foreverStalls >= 1)
        #expect(foreverLowest >= foreverMin - 256 << 10)  // retryForever never takes the reserves (atomic slab pages aside)
        let (reservesTx, foreverTx) = (reserves.transactions, forever.transactions)
        let (reservesLowest, reservesMin) = (reserves.lowestFreeBytes, reserves.minWatermarkBytes)
        #expect(reservesTx > foreverTx, "\(reserves.verdict)")
        #expect(reservesLowest < reservesMin)  // it dug into the .high reserve
        for run in report.runs {
            let (p50, p99, max, samples) = (run.latencyP50Microseconds, run.latencyP99Microseconds,
                                            run.latencyMaxMicroseconds, run.timeline.count)
            #expect(p50 <= p99 && p99 <= max)
            #expect(samples > 10)
        }
        let conclusion = report.conclusion
        #expect(conclusion.contains { $0.contains("retryForever deadlocked") && $0.contains("useReserves completed") },
                "\(conclusion)")
        let table = report.table
        #expect(table.contains("DEADLOCK"))
    }

    @Test("the conclusion is computed from the numbers")
    func conclusion() {
        func run(_ s: CommitSemantics, _ tx: Int, deadlocked: Bool, lowest: Int, atomic: Int) -> RunReport {
            RunReport(semantics: s, seconds: 5, transactions: tx, operations: tx, progress: tx, latencyP50Microseconds: 1,
                      latencyP99Microseconds: 2, latencyMaxMicroseconds: 3000, stallReports: deadlocked ? 4 : 0,
                      oomKills: 0, atomicFailures: atomic, allocationFailures: 0, lowestFreeBytes: lowest,
                      minWatermarkBytes: 4 << 20, lowWatermarkBytes: 5 << 20, highWatermarkBytes: 6 << 20,
                      reclaimMilliseconds: 1, directReclaims: 0, backgroundReclaims: 0, deadlocked: deadlocked,
                      verdict: deadlocked ? "no transaction completed in the last 4.0 s" : "no deadlock",
                      longestGapSeconds: deadlocked ? 4 : 0.01, neededRescue: deadlocked, timeline: [], markers: [])
        }
        let a = ScenarioReport.conclude([run(.retryForever, 3, deadlocked: true, lowest: 4 << 20, atomic: 0),
                                         run(.useReserves, 90, deadlocked: false, lowest: 3 << 20, atomic: 12)])
        #expect(a.last == "Only waiting is not enough here: retryForever deadlocked, while useReserves completed 90 transactions by spending reserves that atomic allocations then lacked (12 failed).")
        #expect(a[1].contains("dipped 1.0 MiB below the min watermark"))
        let b = ScenarioReport.conclude([run(.retryForever, 50, deadlocked: false, lowest: 5 << 20, atomic: 0),
                                         run(.useReserves, 60, deadlocked: false, lowest: 5 << 20, atomic: 0)])
        #expect(b.last?.hasPrefix("No semantics deadlocked; useReserves completed the most transactions (60)") == true)
        let c = ScenarioReport.conclude([run(.retryForever, 1, deadlocked: true, lowest: 4 << 20, atomic: 0),
                                         run(.retryLoop, 1, deadlocked: true, lowest: 4 << 20, atomic: 0)])
        #expect(c.last?.hasPrefix("Every semantics deadlocked") == true)
    }

    @Test("axis scales are 1, 2 or 5 × 10^k with four to ten steps, at or above the maximum")
    func niceScale() {
        for (maximum, top, step) in [(7.3, 8.0, 1.0), (38.4, 40.0, 5.0), (1.0, 1.0, 0.2), (257.0, 300.0, 50.0), (4096.0, 5000.0, 1000.0)] {
            let scale = ScenarioReport.niceScale(maximum)
            #expect(abs(scale.top - top) < 1e-9 && abs(scale.step - step) < 1e-9, "\(maximum): \(scale)")
            #expect(scale.top >= maximum && (4...10).contains(Int((scale.top / scale.step).rounded())))
        }
    }

    @Test("a scenario's cache is a reclaimable ObjectCache of its own, and allocinfo names the scenario's operations")
    func cachesAndSites() throws {
        let yaml = """
        name: named-sites
        description: a cache filled by one worker while another serves requests
        seed: 5
        duration: 400ms
        progress: requests
        arena:
          capacity: 16MiB
        caches:
          - name: page-cache
            objectSize: 4KiB
            count: 200
        workers:
          - name: server
            operations:
              - size: 1KiB
                count: 2
                hold: 1ms
                transaction: true
              - size: 8KiB
                count: 1
                hold: 1ms
          - name: filler
            operations:
              - size: 4KiB
                grow: page-cache
                rate: 500
        events:
          - at: 100ms
            action: grow-cache
            cache: page-cache
            bytes: 64KiB
        """
        let scenario = try ScenarioLoader.load(yaml: yaml, source: "named-sites")
        var slab: SlabCacheStatistics?
        var reclaimable = 0
        let report = try ScenarioRunner.run(scenario, semantics: .retryForever, allocationProfiling: true, then: { mm in
            let s = mm.statistics()
            slab = s.slabCaches.first { $0.name == "page-cache" }
            reclaimable = s.reclaimableSlabBytes
        })
        #expect(report.progressName == "requests" && report.progress == report.transactions && report.progress > 0)
        let cache = try #require(slab, "the scenario's cache has no slab cache of its own")
        #expect(cache.activeObjects >= 200)
        #expect(reclaimable >= 200 * 4096)
        let allocinfo = try #require(report.allocinfo)
        // Live at the end: the cache's objects, from its fill, its filler and the event.
        #expect(allocinfo.contains(" page-cache/fill\n") && allocinfo.contains(" filler/1\n")
                && allocinfo.contains(" events/1 grow-cache\n"), "\(allocinfo)")
        #expect(!allocinfo.contains("scenario:") && !allocinfo.contains(".swift:"), "\(allocinfo)")
        let plain = try ScenarioRunner.run(scenario, semantics: .retryForever)
        #expect(plain.allocinfo == nil)
    }

    @Test("the SVG timeline is well-formed XML with a panel, axes and a legend per run")
    func svg() throws {
        let yaml = BuiltinScenarios.yaml(named: "cache-pressure")!.replacingAll("duration: 4s", "duration: 800ms")
            .replacingAll("at: 1.5s", "at: 300ms").replacingAll("duration: 1s", "duration: 200ms")
        let scenario = try ScenarioLoader.load(yaml: yaml, source: "cache-pressure")
        let report = try ScenarioRunner.run(scenario)
        let svg = report.svg
        let counter = XMLDocumentSummary(svg)
        #expect(counter.parsed, "\(counter.error)")
        #expect(counter.elements["svg"] == 1)
        // Free memory and progress, one line each per run.
        #expect(counter.elements["polyline"] == 2 * report.runs.count)
        #expect(counter.texts.contains("time (s)") && counter.texts.contains("free memory (MiB)"))
        #expect(counter.texts.contains("requests completed") && counter.texts.contains("direct reclaim")
                && counter.texts.contains("background reclaim"))
        #expect(counter.texts.contains("stall report") && counter.texts.contains("OOM kill") && counter.texts.contains("min"))
        #expect(report.runs[0].transactions > 0)
        #expect(!report.runs[0].deadlocked)
    }
}

// SPDX-License-Identifier: Apache-2.0
import MM
@testable import MMLab
import Testing

@Suite("Budget scenarios (Stress)", .timeLimit(.minutes(1)))
struct BudgetScenarioTests {
    @Test("tenants-with-limits: b's spike stops at its max, c keeps its low, and the conclusion says so")
    func tenantsWithLimits() throws {
        let yaml = BuiltinScenarios.yaml(named: "tenants-with-limits")!.replacingAll("duration: 5s", "duration: 2500ms")
            .replacingAll("at: 1.5s", "at: 500ms").replacingAll("at: 3s", "at: 1500ms")
            .replacingAll("duration: 1s", "duration: 500ms")
        let report = try ScenarioRunner.run(try ScenarioLoader.load(yaml: yaml, source: "tenants-with-limits"))
        let run = try #require(report.runs.first)
        let b = try #require(run.groups.first { $0.name == "b" })
        let c = try #require(run.groups.first { $0.name == "c" })
        #expect(b.peakUsage <= 16 << 20)
        #expect((b.events["max"] ?? 0) > 0)
        #expect(c.lowestUsage >= min(12 << 20, c.peakUsage))
        #expect(report.conclusion.contains { $0.hasPrefix("group b:") && $0.contains("never above its max") })
        #expect(report.conclusion.contains { $0.hasPrefix("group c:") && $0.contains("reclaim never took it below") })
    }

    @Test("container-pressure: simulated PSI lowers the limit toward the floor and resident memory follows")
    func containerPressure() throws {
        let yaml = BuiltinScenarios.yaml(named: "container-pressure")!.replacingAll("duration: 6s", "duration: 2500ms")
            .replacingAll("at: 1s", "at: 300ms").replacingAll("duration: 1.5s", "duration: 1s")
        let report = try ScenarioRunner.run(try ScenarioLoader.load(yaml: yaml, source: "container-pressure"))
        let run = try #require(report.runs.first)
        let limit = try #require(run.limit)
        #expect(limit.pressureEvents >= 2)
        #expect(limit.lowest < limit.start && limit.lowest >= 24 << 20)
        #expect(limit.residentAtLowest < limit.residentAtStart)
        #expect(!run.deadlocked)
        #expect(report.conclusion.contains { $0.contains("moved by") && $0.contains("pressure events") })
    }

    @Test("budget fields are validated with the field named", arguments: [
        ("  - name: b\n    max: 16MiB\n", "  - name: b\n    max: 16MiB\n    high: 20MiB\n", "groups[1]", "high"),
        ("  - name: c\n", "  - name: c\n    parent: nobody\n", "groups[2].parent", "no group named"),
        ("    bytes: 24MiB\n    duration: 1s\n    group: b", "    bytes: 24MiB\n    duration: 1s\n    group: d", "events[1].group", "no group named"),
    ])
    func validation(old: String, new: String, field: String, message: String) throws {
        let yaml = BuiltinScenarios.yaml(named: "tenants-with-limits")!.replacingAll(old, new)
        let e = #expect(throws: ScenarioError.self) { _ = try ScenarioLoader.load(yaml: yaml, source: "t.yaml") }
        #expect(e?.field == field, "\(String(describing: e))")
        #expect(e?.message.contains(message) == true, "\(String(describing: e))")
        let noMonitor = BuiltinScenarios.yaml(named: "container-pressure")!
            .replacingAll("  pressureMonitor:\n    floor: 24MiB\n    step: 0.1\n    relaxAfter: 500ms\n", "")
        #expect(noMonitor != BuiltinScenarios.yaml(named: "container-pressure")!)
        #expect(throws: ScenarioError.self) { _ = try ScenarioLoader.load(yaml: noMonitor, source: "c.yaml") }
    }
}

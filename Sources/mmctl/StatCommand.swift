// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import MM
import MMLab

/// `mmctl stat [NAME|FILE]`: runs a scenario once and prints the system's
/// state at its end in /proc formats.
struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario once (its first semantics, with allocation profiling on) and print meminfo, buddyinfo, slabinfo, vmstat, allocinfo, pressure, shrinkers and groups at its end.")

    @Argument(help: "A built-in scenario or a YAML file.")
    var scenario: String = "cache-pressure"

    func run() throws {
        let loaded = try ScenarioSource.load(scenario)
        let semantics = loaded.semantics?.first ?? .retryForever
        var captured: MemoryStatistics?
        let report = try ScenarioRunner.run(loaded, semantics: semantics, allocationProfiling: true,
                                            then: { captured = $0.statistics() })
        guard let s = captured else { throw ValidationError("the run ended without its statistics") }
        print("# \(loaded.name) under \(semantics.rawValue): \(report.progress) \(report.progressName) in \(format(report.seconds)) s; watchdog: \(report.verdict)\n")
        print("""
            == meminfo ==
            \(s.meminfo)
            == buddyinfo ==
            \(s.buddyinfo)
            == slabinfo ==
            \(s.slabinfo)
            == vmstat ==
            \(s.vmstat)
            == allocinfo (the scenario's operations by name) ==
            \(report.allocinfo ?? s.allocinfo)
            == pressure (memory) ==
            \(s.pressure.rendered)
            == shrinkerinfo ==
            \(s.shrinkerinfo)
            == groups (memory.current, limits, memory.events) ==
            \(s.groupinfo)
            """)
    }

    private func format(_ x: Double) -> String { String((x * 10).rounded() / 10) }
}

// SPDX-License-Identifier: Apache-2.0

extension ScenarioReport {
    /// The runs side by side as a terminal table, then the verdicts and the conclusion.
    public var table: String {
        func mib(_ b: Int) -> String { format1(Double(b) / 1048576) + " MiB" }
        func time(_ us: Double) -> String {
            us >= 1e6 ? format1(us / 1e6) + " s" : us >= 1000 ? format1(us / 1000) + " ms" : "\(Int(us)) µs"
        }
        let rows: [(String, (RunReport) -> String)] = [
            ("\(runs.first?.progressName ?? "transactions") completed", { "\($0.progress)" }),
            ("allocation latency p50", { time($0.latencyP50Microseconds) }),
            ("allocation latency p99", { time($0.latencyP99Microseconds) }),
            ("allocation latency max", { time($0.latencyMaxMicroseconds) }),
            ("stall reports", { "\($0.stallReports)" }),
            ("OOM kills", { "\($0.oomKills)" }),
            ("atomic allocation failures", { "\($0.atomicFailures)" }),
            ("failed attempts (all)", { "\($0.allocationFailures)" }),
            ("lowest free memory", { mib($0.lowestFreeBytes) }),
            ("  min watermark", { mib($0.minWatermarkBytes) }),
            ("time stalled in reclaim", { time($0.reclaimMilliseconds * 1000) }),
            ("direct / background reclaims", { "\($0.directReclaims) / \($0.backgroundReclaims)" }),
            ("deadlock watchdog", { $0.deadlocked ? "DEADLOCK" : "ok" }),
        ]
        let labelWidth = rows.map(\.0.count).max()! + 2
        let columnWidth = max(16, runs.map(\.semantics.rawValue.count).max() ?? 0) + 2
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
        var out = "\(scenario) — \(description)\n\n"
        out += pad("", labelWidth) + runs.map { pad(label($0), columnWidth) }.joined() + "\n"
        for (label, value) in rows {
            out += pad(label, labelWidth) + runs.map { pad(value($0), columnWidth) }.joined() + "\n"
        }
        out += "\nWatchdog:\n"
        for r in runs {
            out += "  \(label(r)): \(r.verdict)\(r.neededRescue ? " (threads were freed at the end by dropping the caches)" : "")\n"
        }
        out += "\nConclusion:\n" + conclusion.map { "  - \($0)\n" }.joined()
        return out
    }
}

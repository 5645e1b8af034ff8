// SPDX-License-Identifier: Apache-2.0
import Foundation

extension ScenarioReport {
    /// One timeline panel per run, all on the same scales so that they can be
    /// compared: free memory against time with the min/low/high watermarks,
    /// the run's progress (transactions, or operations) on its own axis,
    /// direct and background reclaim passes apart, stall reports, OOM kills
    /// and the deadlock watchdog's verdict. Self-contained SVG 1.1.
    public var svg: String {
        let width = 1000.0, panelHeight = 230.0, left = 80.0, right = 70.0, top = 90.0, gap = 60.0
        let plotWidth = width - left - right, plotHeight = panelHeight - 50
        let height = top + Double(runs.count) * (panelHeight + gap)
        let duration = max(0.1, runs.map(\.seconds).max() ?? 1)
        func mib(_ b: Int) -> Double { Double(b) / 1048576 }
        // One scale for every panel: free memory and progress.
        let freeTop = runs.map { max(mib($0.highWatermarkBytes) * 1.6, mib($0.timeline.map(\.freeBytes).max() ?? 0) * 1.1) }.max() ?? 1
        let (yMax, yStep) = ScenarioReport.niceScale(max(freeTop, 1))
        let progressTop = Double(runs.map { r in r.timeline.compactMap(\.progress).max() ?? r.progress }.max() ?? 1)
        let (pMax, pStep) = ScenarioReport.niceScale(max(progressTop, 1))
        func f(_ x: Double) -> String { String(format1(x)) }
        func escape(_ s: String) -> String {
            s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;")
        }
        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <title>\(escape(scenario)): free memory over time per semantics</title>
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="white"/>
        <text x="\(Int(left))" y="22" font-size="16" font-weight="bold">\(escape(scenario)) — free memory over time</text>

        """
        // Legend.
        let legend: [(String, String)] = [
            ("<line x1=\"0\" y1=\"0\" x2=\"18\" y2=\"0\" stroke=\"#1f77b4\" stroke-width=\"2\"/>", "free memory"),
            ("<line x1=\"0\" y1=\"0\" x2=\"18\" y2=\"0\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>", "min"),
            ("<line x1=\"0\" y1=\"0\" x2=\"18\" y2=\"0\" stroke=\"#ff7f0e\" stroke-dasharray=\"4 3\"/>", "low"),
            ("<line x1=\"0\" y1=\"0\" x2=\"18\" y2=\"0\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/>", "high"),
            ("<line x1=\"0\" y1=\"0\" x2=\"18\" y2=\"0\" stroke=\"#9467bd\" stroke-width=\"2\"/>", "\(escape(runs.first?.progressName ?? "progress")) completed (right axis)"),
            ("<line x1=\"9\" y1=\"-6\" x2=\"9\" y2=\"6\" stroke=\"#8c564b\" stroke-width=\"2\"/>", "direct reclaim"),
            ("<line x1=\"9\" y1=\"-6\" x2=\"9\" y2=\"6\" stroke=\"#7f7f7f\"/>", "background reclaim"),
            ("<path d=\"M9,-6 L15,5 L3,5 Z\" fill=\"#ff7f0e\"/>", "stall report"),
            ("<path d=\"M4,-5 L14,5 M14,-5 L4,5\" stroke=\"#d62728\" stroke-width=\"2\"/>", "OOM kill"),
            ("<rect x=\"0\" y=\"-6\" width=\"18\" height=\"12\" fill=\"#d62728\" fill-opacity=\"0.15\"/>", "deadlock (no progress)"),
        ]
        var lx = left, ly = 45.0
        for (symbol, label) in legend {
            let itemWidth = 24 + Double(label.count) * 6.8 + 14
            if lx + itemWidth > width - right { lx = left; ly += 20 }
            out += "<g transform=\"translate(\(f(lx)),\(f(ly)))\">\(symbol)<text x=\"22\" y=\"4\">\(label)</text></g>\n"
            lx += itemWidth
        }
        for (i, run) in runs.enumerated() {
            let y0 = top + Double(i) * (panelHeight + gap) + 20
            func x(_ t: Double) -> Double { left + t / duration * plotWidth }
            func y(_ m: Double) -> Double { y0 + plotHeight - min(m, yMax) / yMax * plotHeight }
            func py(_ p: Double) -> Double { y0 + plotHeight - min(p, pMax) / pMax * plotHeight }
            out += "<g>\n<text x=\"\(f(left))\" y=\"\(f(y0 - 8))\" font-size=\"14\" font-weight=\"bold\">\(label(run)): \(run.progress) \(escape(run.progressName)) — \(escape(run.verdict))</text>\n"
            out += "<rect x=\"\(f(left))\" y=\"\(f(y0))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#333\"/>\n"
            // Deadlock shading.
            for m in run.markers where m.kind == .deadlock {
                out += "<rect x=\"\(f(x(m.t)))\" y=\"\(f(y0))\" width=\"\(f(max(0, x(run.seconds) - x(m.t))))\" height=\"\(f(plotHeight))\" fill=\"#d62728\" fill-opacity=\"0.15\"/>\n"
            }
            // Axes: x every second (or so), y at 0, the watermarks and the top.
            let step = duration > 20 ? 5.0 : duration > 8 ? 2.0 : duration > 2 ? 1.0 : 0.5
            var t = 0.0
            while t <= duration + 1e-9 {
                out += "<line x1=\"\(f(x(t)))\" y1=\"\(f(y0 + plotHeight))\" x2=\"\(f(x(t)))\" y2=\"\(f(y0 + plotHeight + 5))\" stroke=\"#333\"/>"
                out += "<text x=\"\(f(x(t)))\" y=\"\(f(y0 + plotHeight + 18))\" text-anchor=\"middle\">\(f(t))</text>\n"
                t += step
            }
            out += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(y0 + plotHeight + 34))\" text-anchor=\"middle\">time (s)</text>\n"
            out += "<text transform=\"translate(\(f(left - 52)),\(f(y0 + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">free memory (MiB)</text>\n"
            out += "<text transform=\"translate(\(f(left + plotWidth + 28)),\(f(y0 + plotHeight / 2))) rotate(90)\" text-anchor=\"middle\" fill=\"#9467bd\">\(escape(run.progressName)) completed</text>\n"
            // Regular steps on both vertical axes: free memory left, progress right.
            var value = 0.0
            while value <= yMax + 1e-9 {
                out += "<line x1=\"\(f(left - 5))\" y1=\"\(f(y(value)))\" x2=\"\(f(left))\" y2=\"\(f(y(value)))\" stroke=\"#333\"/><text x=\"\(f(left - 8))\" y=\"\(f(y(value) + 4))\" text-anchor=\"end\" fill=\"#555\">\(f(value))</text>\n"
                value += yStep
            }
            var p = 0.0
            while p <= pMax + 1e-9 {
                out += "<line x1=\"\(f(left + plotWidth))\" y1=\"\(f(py(p)))\" x2=\"\(f(left + plotWidth + 5))\" y2=\"\(f(py(p)))\" stroke=\"#9467bd\"/><text x=\"\(f(left + plotWidth + 8))\" y=\"\(f(py(p) + 4))\" fill=\"#9467bd\">\(Int(p))</text>\n"
                p += pStep
            }
            for (bytes, color) in [(run.minWatermarkBytes, "#d62728"), (run.lowWatermarkBytes, "#ff7f0e"), (run.highWatermarkBytes, "#2ca02c")] {
                out += "<line x1=\"\(f(left))\" y1=\"\(f(y(mib(bytes))))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(y(mib(bytes))))\" stroke=\"\(color)\" stroke-dasharray=\"4 3\"/>"
                out += "<text x=\"\(f(left - 8))\" y=\"\(f(y(mib(bytes)) + 4))\" text-anchor=\"end\" fill=\"\(color)\">\(f(mib(bytes)))</text>\n"
            }
            // Free memory.
            if !run.timeline.isEmpty {
                let points = run.timeline.map { "\(f(x($0.t))),\(f(y(mib($0.freeBytes))))" }.joined(separator: " ")
                out += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
            }
            // Progress.
            let progress = run.timeline.compactMap { s in s.progress.map { (s.t, Double($0)) } }
            if !progress.isEmpty {
                let points = progress.map { "\(f(x($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
                out += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"#9467bd\" stroke-width=\"2\"/>\n"
            }
            // Markers.
            for m in run.markers {
                let mx = f(x(m.t))
                switch m.kind {
                case .directReclaim:
                    out += "<line x1=\"\(mx)\" y1=\"\(f(y0 + plotHeight - 12))\" x2=\"\(mx)\" y2=\"\(f(y0 + plotHeight))\" stroke=\"#8c564b\" stroke-width=\"2\"/>\n"
                case .reclaim, .backgroundReclaim:
                    out += "<line x1=\"\(mx)\" y1=\"\(f(y0 + plotHeight - 8))\" x2=\"\(mx)\" y2=\"\(f(y0 + plotHeight))\" stroke=\"#7f7f7f\"/>\n"
                case .stall:
                    out += "<path d=\"M\(mx),\(f(y0 + 4)) l6,11 l-12,0 Z\" fill=\"#ff7f0e\"><title>stall report at \(f(m.t)) s</title></path>\n"
                case .oomKill:
                    out += "<path d=\"M\(f(x(m.t) - 5)),\(f(y0 + 20)) l10,10 m0,-10 l-10,10\" stroke=\"#d62728\" stroke-width=\"2\"><title>OOM kill at \(f(m.t)) s</title></path>\n"
                case .deadlock:
                    break
                }
            }
            out += "</g>\n"
        }
        return out + "</svg>\n"
    }

    /// An axis top at or above `maximum` and a step, both 1, 2 or 5 × 10^k,
    /// with four to ten steps.
    static func niceScale(_ maximum: Double) -> (top: Double, step: Double) {
        let raw = maximum / 8
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2.0, 5.0, 10.0].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        return ((maximum / step).rounded(.up) * step, step)
    }
}

extension String {
    func replacingAll(_ target: String, _ replacement: String) -> String {
        replacingOccurrences(of: target, with: replacement)
    }
}

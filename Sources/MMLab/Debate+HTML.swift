// SPDX-License-Identifier: Apache-2.0

extension Debate {
    /// The whole debate as one self-contained page (`mmctl debate --html
    /// FILE`): the table of claims, then per claim who said it, what was
    /// measured, the verdict and the scenario's timelines inline. Written
    /// as well-formed XHTML, so that any XML tool can read it.
    /// - Parameters:
    ///   - rows: the judged claims, as `run(scale:progress:)` returns them.
    ///   - title: the page's title.
    /// - Returns: the page.
    public static func html(_ rows: [DebateRow], title: String = "The __GFP_NOFAIL debate, claim by claim (swift-mm)") -> String {
        func escape(_ s: String) -> String {
            s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;").replacingAll("\"", "&quot;")
        }
        var out = """
        <!DOCTYPE html>
        <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
        <head>
        <meta charset="utf-8"/>
        <title>\(escape(title))</title>
        <style>
        body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; line-height: 1.4; }
        table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
        .verdict { background: #f4f8ff; border-left: 4px solid #1f77b4; padding: 6px 10px; }
        svg { max-width: 100%; height: auto; }
        </style>
        </head>
        <body>
        <h1>\(escape(title))</h1>
        <p>Every claim of the 2021 thread, played as a scenario under the semantics it is about. The numbers are one run's; each verdict is computed from them (<code>mmctl debate</code>).</p>
        <table>
        <tr><th>claim</th><th>who</th><th>scenario</th><th>verdict</th></tr>

        """
        for r in rows {
            out += "<tr><td><a href=\"#claim-\(r.number)\">\(r.number)</a></td><td>\(escape(r.who))</td>"
                + "<td><code>\(escape(r.scenario))</code></td><td>\(escape(r.verdict))</td></tr>\n"
        }
        out += "</table>\n"
        for r in rows {
            out += """
            <h2 id="claim-\(r.number)">\(r.number). \(escape(r.who))</h2>
            <p><em>\(escape(r.claim))</em></p>
            <p>Scenario <code>\(escape(r.scenario))</code> (<code>mmctl run \(escape(r.scenario))</code> for the full report).</p>
            <p><strong>Measured:</strong> \(escape(r.numbers))</p>
            <p class="verdict"><strong>Verdict:</strong> \(escape(r.verdict))</p>

            """
            // Inline SVG: everything after the XML declaration.
            if let start = r.svg.range(of: "<svg") { out += String(r.svg[start.lowerBound...]) + "\n" }
        }
        out += "</body>\n</html>\n"
        return out
    }
}

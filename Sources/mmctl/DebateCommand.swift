// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import MM
import MMLab

/// `mmctl debate`: every claim of the 2021 `__GFP_NOFAIL` thread that the
/// lab can play, each run under the semantics it is about, with a verdict
/// computed from the numbers.
struct DebateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debate",
        abstract: "Run every claim of the 2021 __GFP_NOFAIL thread as a scenario and print the measured verdicts (about 80 s).")

    @Flag(help: "Print the rows as JSON.")
    var json = false

    @Option(help: "Scale every scenario's duration and event times (1 = as built in; 0.3 for a quick look).")
    var scale: Double = 1

    @Option(help: "Write each claim's timelines to DIR/claim-N-SCENARIO.svg (every run of a claim on one scale).")
    var svg: String?

    @Option(help: "Write the whole debate as one page (table, verdicts and every timeline) to FILE.")
    var html: String?

    func validate() throws {
        guard scale > 0 && scale <= 10 else { throw ValidationError("--scale \(scale) is outside (0, 10]") }
    }

    func run() throws {
        let interactive = isatty(STDERR_FILENO) == 1 && !json
        var progress: (@Sendable (Int, CommitSemantics, Double) -> Void)?
        if interactive { progress = DebateCommand.showProgress }
        let rows: [DebateRow] = try Debate.run(scale: scale, progress: progress)
        if interactive { FileHandle.standardError.write(Data("\u{1B}[2K\r".utf8)) }
        if let svg {
            try FileManager.default.createDirectory(atPath: svg, withIntermediateDirectories: true)
            for r in rows {
                try r.svg.write(toFile: "\(svg)/claim-\(r.number)-\(r.scenario).svg", atomically: true, encoding: .utf8)
            }
        }
        if let html {
            try Debate.html(rows).write(toFile: html, atomically: true, encoding: .utf8)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            return
        }
        let scenarioWidth = rows.map { (row: DebateRow) -> Int in row.scenario.count }.max() ?? 8
        func padded(_ text: String, _ width: Int) -> String {
            text + String(repeating: " ", count: Swift.max(0, width - text.count))
        }
        print("claim  " + padded("scenario", scenarioWidth) + "  who")
        for r in rows {
            let line: String = padded(String(r.number), 5) + "  " + padded(r.scenario, scenarioWidth) + "  " + r.who
            print(line)
        }
        for r in rows {
            print("\n\(r.number). \(r.who): \(r.claim)")
            print("   scenario: \(r.scenario)   (mmctl run \(r.scenario) for the full report)")
            print("   measured: \(r.numbers)")
            print("   verdict:  \(r.verdict)")
        }
    }

    /// A progress bar on standard error (a TTY).
    @Sendable static func showProgress(_ claim: Int, _ semantics: CommitSemantics, _ fraction: Double) {
        let filled = Int(fraction * 20)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled)
        FileHandle.standardError.write(Data("\u{1B}[2K\rclaim \(claim) \(semantics.rawValue) [\(bar)]".utf8))
    }
}

// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import MM

/// `mmctl bench [SUITE]`: ratios from one run. Absolute times are printed
/// for context only; the machines are shared and noisy.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure swift-mm against the OS and the system allocator; prints ratios from one run.",
        discussion: "Build in release mode: swift run -c release mmctl bench pages")

    enum Suite: String, ExpressibleByArgument, CaseIterable {
        case all, pages, objects, scopes, reclaim
    }

    @Argument(help: "Which suite: \(Suite.allCases.map(\.rawValue).joined(separator: ", ")).")
    var suite: Suite = .all

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(help: "Scale the iteration counts (1 = default; lower for a quick look).")
    var scale: Double = 1

    func run() throws {
        #if DEBUG
        FileHandle.standardError.write(Data("warning: mmctl was built in debug mode; build with -c release for meaningful ratios\n".utf8))
        #endif
        var results: [BenchResult] = []
        if suite == .all || suite == .pages { results += try PagesBench(scale: scale).run() }
        if suite == .all || suite == .objects {
            // In one table, the objects suite's figures that share a name with the pages suite's are prefixed.
            let taken = Set(results.map(\.key))
            results += try ObjectsBench(scale: scale).run().map { r in
                var r = r
                if taken.contains(r.key) { r.key = "objects." + r.key }
                return r
            }
        }
        if suite == .all || suite == .scopes { results += try ScopesBench(scale: scale).run() }
        if suite == .all || suite == .reclaim { results += try ReclaimBench(scale: scale).run() }
        BenchResult.print(results, json: json)
    }
}

/// One measured figure: a ratio with its goal, plus the raw numbers behind it.
struct BenchResult {
    var key: String
    var value: Double
    var goal: String
    var detail: String

    static func print(_ results: [BenchResult], json: Bool) {
        if json {
            let body = results.map { "  \"\($0.key)\": \(String(format: "%.4f", $0.value))" }.joined(separator: ",\n")
            Swift.print("{\n\(body)\n}")
            return
        }
        let width = max(10, results.map(\.key.count).max() ?? 0)
        Swift.print("\("figure".padding(toLength: width, withPad: " ", startingAt: 0))  \("value".padding(toLength: 10, withPad: " ", startingAt: 0))  \("goal".padding(toLength: 9, withPad: " ", startingAt: 0))  detail")
        for r in results {
            Swift.print("\(r.key.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(format: "%-10.4f", r.value))  \(r.goal.padding(toLength: 9, withPad: " ", startingAt: 0))  \(r.detail)")
        }
    }
}

/// Best-of-`repetitions` nanoseconds per iteration of `body`.
func bestNanosecondsPerIteration(iterations: Int, repetitions: Int = 5, _ body: (Int) -> Void) -> Double {
    var best = Double.infinity
    let clock = ContinuousClock()
    for _ in 0..<repetitions {
        let elapsed = clock.measure { body(iterations) }
        let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
        best = min(best, ns / Double(iterations))
    }
    return best
}

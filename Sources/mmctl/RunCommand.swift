// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import MM
import MMLab

/// `mmctl run [NAME|FILE]`: runs a scenario under each of its semantics and
/// prints the runs side by side with a conclusion.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario (built-in name or YAML file) and report what each semantics did.")

    @Argument(help: "A built-in scenario (see `mmctl scenarios`) or a YAML file.")
    var scenario: String = "transaction-commit"

    @Flag(help: "Print the report as JSON (timelines included).")
    var json = false

    @Option(help: "Write a timeline per semantics to this SVG file.")
    var svg: String?

    func run() throws {
        let loaded = try ScenarioSource.load(scenario)
        let interactive = isatty(STDERR_FILENO) == 1 && !json
        let total = loaded.duration.value * Double((loaded.semantics ?? [.retryForever]).count)
        let showProgress = interactive && total > 2
        let progress: (@Sendable (CommitSemantics, Double) -> Void)? = showProgress ? Run.showProgress : nil
        let report = try ScenarioRunner.run(loaded, progress: progress)
        if let svg {
            try report.svg.write(toFile: svg, atomically: true, encoding: .utf8)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.table)
            if let svg { print("Timeline written to \(svg)") }
        }
    }
}

extension Run {
    /// A progress bar on standard error (a TTY), one line per semantics.
    @Sendable static func showProgress(_ semantics: CommitSemantics, _ fraction: Double) {
        let filled = Int(fraction * 30)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
        let name = semantics.rawValue + String(repeating: " ", count: max(0, 13 - semantics.rawValue.count))
        var line = "\r\(name) [\(bar)] \(Int(fraction * 100))%"
        if fraction >= 1 { line += "\n" }
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// Scenario arguments: a built-in name or a file path.
enum ScenarioSource {
    static func load(_ nameOrPath: String) throws -> Scenario {
        if let yaml = BuiltinScenarios.yaml(named: nameOrPath) {
            return try check(ScenarioLoader.load(yaml: yaml, source: nameOrPath))
        }
        guard FileManager.default.fileExists(atPath: nameOrPath) else {
            throw ValidationError(notFound(nameOrPath))
        }
        guard let yaml = try? String(contentsOfFile: nameOrPath, encoding: .utf8) else {
            throw ValidationError("cannot read \(nameOrPath) as UTF-8 text")
        }
        return try check(ScenarioLoader.load(yaml: yaml, source: nameOrPath))
    }

    /// What to say about an argument that is neither a built-in scenario nor a file.
    static func notFound(_ argument: String) -> String {
        let builtins = BuiltinScenarios.all.map(\.name)
        let looksLikePath = argument.contains("/") || argument.hasSuffix(".yaml") || argument.hasSuffix(".yml")
        if looksLikePath { return "file not found: \(argument)" }
        let subcommands = ["run", "scenarios", "stat", "bench", "debate"]
        if let command = subcommands.first(where: { editDistance($0, argument) <= 2 }) {
            return "unknown subcommand or scenario \"\(argument)\"; did you mean `mmctl \(command)`?"
        }
        if let name = builtins.min(by: { editDistance($0, argument) < editDistance($1, argument) }),
           editDistance(name, argument) <= 3 {
            return "no built-in scenario named \"\(argument)\"; did you mean \(name)? (built-ins: \(builtins.joined(separator: ", ")))"
        }
        return "no built-in scenario named \"\(argument)\" and no such file (built-ins: \(builtins.joined(separator: ", ")); subcommands: \(subcommands.joined(separator: ", ")))"
    }

    /// Levenshtein distance, for suggestions.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }

    /// A refused scenario file is reported once, as `FILE:LINE:COLUMN: error: …`
    /// on standard error, with exit status 64 like every usage error.
    private static func check(_ body: @autoclosure () throws -> Scenario) throws -> Scenario {
        do { return try body() } catch let error as ScenarioError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(64)
        }
    }
}

/// `mmctl scenarios [show NAME]`: the built-in scenarios.
struct Scenarios: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the built-in scenarios, or print one (`mmctl scenarios show NAME`) to copy and edit.")

    @Argument(help: "`show`, then a scenario name.")
    var words: [String] = []

    func run() throws {
        switch words.count {
        case 0:
            for (name, yaml) in BuiltinScenarios.all {
                let scenario = try ScenarioLoader.load(yaml: yaml, source: name)
                let firstSentence = scenario.description.split(separator: ":").first.map(String.init) ?? scenario.description
                print("\(name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(firstSentence)")
            }
        case 2 where words[0] == "show":
            guard let yaml = BuiltinScenarios.yaml(named: words[1]) else {
                throw ValidationError("no built-in scenario named \"\(words[1])\" (built-ins: \(BuiltinScenarios.all.map(\.name).joined(separator: ", ")))")
            }
            print(yaml)
        default:
            throw ValidationError("usage: mmctl scenarios [show NAME]")
        }
    }
}



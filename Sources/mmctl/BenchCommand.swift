// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import MM
import MMLab
import Synchronization

/// `mmctl bench [SUITE]`: ratios from one run. Absolute times are printed
/// for context only; the machines are shared and noisy.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure swift-mm against the OS and the system allocator; prints ratios from one run.",
        discussion: "Build in release mode: swift run -c release mmctl bench pages")

    enum Suite: String, ExpressibleByArgument, CaseIterable {
        case all, pages, objects, scopes, reclaim, budgets, kvmalloc
    }

    @Argument(help: "Which suite: \(Suite.allCases.map(\.rawValue).joined(separator: ", ")).")
    var suite: Suite = .all

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(help: "Scale the iteration counts (1 = default; lower for a quick look).")
    var scale: Double = 1

    /// Internal: one suite's figures as tab-separated records, for `all`.
    @Flag(help: .hidden)
    var records = false

    func run() throws {
        #if DEBUG
        FileHandle.standardError.write(Data("warning: mmctl was built in debug mode; build with -c release for meaningful ratios\n".utf8))
        #endif
        var results: [BenchResult] = []
        let showProgress = isatty(STDERR_FILENO) == 1 && !json && !records
        if suite == .all {
            // Each suite in a process of its own, so that what one suite leaves behind
            // (heap layout, caches, threads) cannot change another's ratios.
            let taken = SharedValue<Set<String>>([])
            for one in Suite.allCases where one != .all {
                if showProgress { FileHandle.standardError.write(Data("\u{1B}[2K\rmeasuring \(one.rawValue)…".utf8)) }
                let figures = try Bench.runIsolated(one, scale: scale)
                let prefix = taken.get().isDisjoint(with: figures.map(\.key)) ? "" : one.rawValue + "."
                results += figures.map { var r = $0; r.key = prefix + r.key; return r }
                taken.set(taken.get().union(results.map(\.key)))
            }
            if showProgress { FileHandle.standardError.write(Data("\u{1B}[2K\r".utf8)) }
            BenchResult.print(results, json: json)
            return
        }
        func announce(_ name: String) {
            if showProgress { FileHandle.standardError.write(Data("\u{1B}[2K\rmeasuring \(name)…".utf8)) }
        }
        defer { if showProgress { FileHandle.standardError.write(Data("\u{1B}[2K\r".utf8)) } }
        if suite == .all || suite == .pages {
            announce("pages")
            results += try PagesBench(scale: scale).run()
        }
        if suite == .all || suite == .objects {
            announce("objects")
            // In one table, the objects suite's figures that share a name with the pages suite's are prefixed.
            let taken = Set(results.map(\.key))
            results += try ObjectsBench(scale: scale).run().map { r in
                var r = r
                if taken.contains(r.key) { r.key = "objects." + r.key }
                return r
            }
        }
        if suite == .all || suite == .scopes {
            announce("scopes")
            results += try ScopesBench(scale: scale).run()
        }
        if suite == .all || suite == .reclaim {
            announce("reclaim")
            results += try ReclaimBench(scale: scale).run()
        }
        if suite == .all || suite == .kvmalloc {
            announce("kvmalloc")
            results += try KvmallocBench(scale: scale).run()
        }
        if suite == .all || suite == .budgets {
            announce("budgets")
            results += try BudgetsBench(scale: scale).run()
        }
        if records {
            for r in results { Swift.print([r.key, String(r.value), r.goal, r.detail].joined(separator: "\t")) }
        } else {
            BenchResult.print(results, json: json)
        }
    }

    /// Runs `mmctl bench SUITE --records` in a new process and reads its figures.
    static func runIsolated(_ suite: Suite, scale: Double) throws -> [BenchResult] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["bench", suite.rawValue, "--records", "--scale", String(scale)]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("the \(suite.rawValue) suite failed (exit status \(process.terminationStatus))")
        }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 4, let value = Double(fields[1]) else { return nil }
            return BenchResult(key: fields[0], value: value, goal: fields[2], detail: fields[3])
        }
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
        Swift.print("\("figure".padding(toLength: width, withPad: " ", startingAt: 0))  \("value".padding(toLength: 10, withPad: " ", startingAt: 0))  \("goal".padding(toLength: 16, withPad: " ", startingAt: 0))  met  detail")
        for r in results {
            let met = r.goalMet.map { $0 ? "yes" : "NO " } ?? " - "
            Swift.print("\(r.key.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(format: "%-10.4f", r.value))  \(r.goal.padding(toLength: 16, withPad: " ", startingAt: 0))  \(met)  \(r.detail)")
        }
    }

    /// Whether the value meets a goal written `<= X`, `< X`, `>= X`, `> X` or
    /// `~ X` (within 25 %); nil for a goal in words.
    var goalMet: Bool? {
        let parts = goal.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, let bound = Double(parts[1].prefix { "0123456789.".contains($0) }) else { return nil }
        switch parts[0] {
        case "<=": return value <= bound
        case "<": return value < bound
        case ">=": return value >= bound
        case ">": return value > bound
        case "~": return abs(value - bound) <= 0.25 * bound
        default: return nil
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

/// The controls for thread-scaling figures: the same two-threads-against-one
/// measurement of loops that share nothing. `arithmetic` is integer
/// arithmetic in registers; `memory` pops a pointer from a private stack,
/// writes a byte where it points and pushes it back — the loads, stores and
/// branches of a magazine hit, on memory no other thread touches. On an idle
/// machine with a core per thread both are ≈ 2. On this kind of VM the
/// arithmetic loop scales ≈ 1.95 while the memory loop scales 1.0–1.7 (two
/// vCPUs that share a physical core's load/store units look exactly like
/// that), so an allocator's scaling is divided by the memory control: what is
/// left is the allocator's own sharing.
struct ScalingControl {
    /// Two threads' throughput ÷ one thread's, arithmetic loop.
    var arithmetic: Double
    /// Two threads' throughput ÷ one thread's, private-memory loop.
    var memory: Double

    /// Both controls, best of five runs each.
    static func measure(iterationsPerThread: Int) -> ScalingControl {
        ScalingControl(arithmetic: scaling(iterationsPerThread: iterationsPerThread, arithmeticLoop),
                       memory: scaling(iterationsPerThread: iterationsPerThread, memoryLoop))
    }

    private static func arithmeticLoop(_ thread: Int, _ iterations: Int) -> UInt64 {
        var x = UInt64(thread + 1)
        for _ in 0..<iterations { x = x &* 6364136223846793005 &+ 1442695040888963407 }
        return x
    }

    private static func memoryLoop(_ thread: Int, _ iterations: Int) -> UInt64 {
        let objects = UnsafeMutableRawPointer.allocate(byteCount: 64 * 64, alignment: 4096)
        let stack = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: 64)
        defer { objects.deallocate(); stack.deallocate() }
        for i in 0..<64 { stack[i] = objects + 64 * i }
        var count = 32
        var sum: UInt64 = 0
        for i in 0..<iterations {
            count &-= 1
            let p = stack[count]
            p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
            sum &+= UInt64(UInt(bitPattern: p))
            stack[count] = p
            count &+= 1
        }
        return sum &+ UInt64(objects.load(as: UInt8.self))
    }

    private static func scaling(iterationsPerThread: Int, _ loop: @escaping @Sendable (Int, Int) -> UInt64) -> Double {
        func throughput(_ threads: Int) -> Double {
            var best = 0.0
            for _ in 0..<5 {
                let start = Atomic<Int>(0)
                let sink = Atomic<UInt64>(0)
                let elapsed = ContinuousClock().measure {
                    runThreads(threads) { t in
                        start.wrappingAdd(1, ordering: .acquiringAndReleasing)
                        while start.load(ordering: .acquiring) < threads {}
                        sink.wrappingAdd(loop(t, iterationsPerThread), ordering: .relaxed)   // keeps the loop
                    }
                }
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                best = max(best, Double(threads * iterationsPerThread) / seconds)
            }
            return best
        }
        let one = throughput(1)
        return throughput(2) / one
    }
}

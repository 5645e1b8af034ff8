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

/// The best nanoseconds per iteration of `first` and of `second`, measured
/// in alternation (one repetition of each in turn), so that a disturbance of
/// the machine falls on both rather than on whichever ran at that moment.
func bestNanosecondsPerIteration(iterations: Int, repetitions: Int = 5, _ first: (Int) -> Void,
                                 alternatingWith second: (Int) -> Void) -> (Double, Double) {
    var best = (Double.infinity, Double.infinity)
    let clock = ContinuousClock()
    func nanoseconds(_ body: (Int) -> Void) -> Double {
        let elapsed = clock.measure { body(iterations) }
        return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(iterations)
    }
    for _ in 0..<repetitions {
        best.0 = min(best.0, nanoseconds(first))
        best.1 = min(best.1, nanoseconds(second))
    }
    return best
}

/// Thread scaling measured against controls, loops that share nothing:
/// `arithmetic` is integer arithmetic in registers; `memory` pops a pointer
/// from a private stack, writes a byte where it points and pushes it back —
/// the loads, stores and branches of a magazine hit, on memory no other
/// thread touches. On a machine with a free core per thread both scale ≈ 2.
/// On this kind of VM arithmetic scales ≈ 1.95 while the memory loop scales
/// anywhere from 0.8 to 2.0 from one moment to the next (two vCPUs that
/// share a physical core's load/store units some of the time look exactly
/// like that). So the subject and the memory control are measured in
/// alternation, one thread then two, five rounds, and each round's subject
/// scaling is divided by the control's of the same round: the median of
/// those is the allocator's own scaling, with the machine's taken out.
struct ThreadScaling {
    /// The subject's two-thread throughput ÷ one-thread throughput (median of the rounds).
    var subject: Double
    /// The arithmetic control's scaling (best of three, measured once).
    var arithmetic: Double
    /// The memory control's scaling (median of the rounds).
    var memory: Double
    /// The median over rounds of subject scaling ÷ memory-control scaling.
    var relative: Double

    /// Measures `throughput(threads)` (operations per second with that many
    /// threads) and the controls with `iterationsPerThread` control iterations.
    static func measure(iterationsPerThread: Int, rounds: Int = 5,
                        _ throughput: (_ threads: Int) -> Double) -> ThreadScaling {
        let arithmetic = bestScaling(iterationsPerThread: iterationsPerThread, arithmeticLoop)
        var subject: [Double] = [], memory: [Double] = [], relative: [Double] = []
        for _ in 0..<rounds {
            let control1 = loopThroughput(threads: 1, iterationsPerThread: iterationsPerThread, memoryLoop)
            let subject1 = throughput(1)
            let control2 = loopThroughput(threads: 2, iterationsPerThread: iterationsPerThread, memoryLoop)
            let subject2 = throughput(2)
            subject.append(subject2 / subject1)
            memory.append(control2 / control1)
            relative.append((subject2 / subject1) / (control2 / control1))
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        return ThreadScaling(subject: median(subject), arithmetic: arithmetic, memory: median(memory), relative: median(relative))
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

    /// Iterations per second of `loop` on `threads` threads started together.
    private static func loopThroughput(threads: Int, iterationsPerThread: Int,
                                       _ loop: @escaping @Sendable (Int, Int) -> UInt64) -> Double {
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
        return Double(threads * iterationsPerThread) / seconds
    }

    private static func bestScaling(iterationsPerThread: Int, _ loop: @escaping @Sendable (Int, Int) -> UInt64) -> Double {
        var one = 0.0, two = 0.0
        for _ in 0..<3 {
            one = max(one, loopThroughput(threads: 1, iterationsPerThread: iterationsPerThread, loop))
            two = max(two, loopThroughput(threads: 2, iterationsPerThread: iterationsPerThread, loop))
        }
        return two / one
    }
}

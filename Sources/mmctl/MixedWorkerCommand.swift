// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import Glibc
import MM

/// `mmctl mixed-worker` (hidden): runs the mixed workload once, in a process
/// of its own, on one allocator, and prints `seconds<TAB>peak RSS KiB`, so
/// that `mmctl bench objects` can compare peak RSS per allocator.
struct MixedWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mixed-worker", abstract: "Run the mixed workload once (used by `bench objects`).",
        shouldDisplay: false)

    enum Allocator: String, ExpressibleByArgument { case swiftmm = "swift-mm", malloc }

    @Option(help: "swift-mm, or malloc (the process's, which LD_PRELOAD may replace).")
    var allocator: Allocator

    @Option(help: "Steps per thread.")
    var operations: Int

    func run() throws {
        let seconds: Double
        switch allocator {
        case .swiftmm:
            var config = MemoryConfiguration(capacity: 512 << 20)
            config.logsEvents = false
            let mm = try MemorySystem(config)
            seconds = MixedWorkload.seconds(operations: operations, runs: 1, SwiftMMMixedAllocator(mm: mm))
        case .malloc:
            seconds = MixedWorkload.seconds(operations: operations, runs: 1, MallocMixedAllocator())
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        print("\(seconds)\t\(usage.ru_maxrss)")
    }

    /// Runs the worker in a child process; its seconds and peak RSS in bytes.
    static func measure(_ allocator: Allocator, operations: Int) throws -> (seconds: Double, peakRSS: Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["mixed-worker", "--allocator", allocator.rawValue, "--operations", String(operations)]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let fields = String(decoding: data, as: UTF8.self).split(whereSeparator: { $0 == "\t" || $0 == "\n" })
        guard process.terminationStatus == 0, fields.count == 2, let seconds = Double(fields[0]), let kib = Int(fields[1]) else {
            throw ValidationError("the mixed workload on \(allocator.rawValue) failed (exit status \(process.terminationStatus))")
        }
        return (seconds, kib << 10)
    }
}

/// The mixed workload on a swift-mm system.
struct SwiftMMMixedAllocator: MixedWorkloadAllocator {
    let mm: MemorySystem
    @inline(__always) func allocate(_ size: Int) -> UnsafeMutableRawPointer { mm.allocate(byteCount: size).unsafelyUnwrapped }
    @inline(__always) func free(_ pointer: UnsafeMutableRawPointer) { mm.deallocate(pointer) }
}

/// The mixed workload on the process's `malloc` (glibc's, or what LD_PRELOAD put in its place).
/// The function pointers are read once, here: reading the lazy globals
/// `systemMalloc`/`systemFree` in the loop would cost a `swift_once` call per
/// operation that swift-mm's side does not pay.
struct MallocMixedAllocator: MixedWorkloadAllocator {
    let mallocFunction = systemMalloc
    let freeFunction = systemFree
    @inline(__always) func allocate(_ size: Int) -> UnsafeMutableRawPointer { mallocFunction(size).unsafelyUnwrapped }
    @inline(__always) func free(_ pointer: UnsafeMutableRawPointer) { freeFunction(pointer) }
}

// SPDX-License-Identifier: Apache-2.0
// A Swift program's own allocations — class instances, arrays, dictionaries,
// strings — for scripts/process-allocator-bench.sh (the `swift` shape): what
// a whole Swift process costs on each allocator, the runtime's metadata and
// reference counting included. Deterministic; prints "swift <seconds> <peak RSS KiB>",
// or with the argument `check` only its checksum (scripts/process-allocator-check.sh
// compares that under glibc and under libmmmalloc). Built with `swiftc -O`; runs
// under LD_PRELOAD like the C shapes.
import Glibc

final class Node {
    var next: Node?
    var payload: [UInt8]
    var name: String
    init(next: Node?, payload: [UInt8], name: String) {
        self.next = next
        self.payload = payload
        self.name = name
    }
}

var seed: UInt64 = 2026
func step() -> UInt64 {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
    return seed
}

var start = timespec()
clock_gettime(CLOCK_MONOTONIC, &start)
var checksum = 0
for round in 0..<40 {
    // A dictionary of arrays keyed by interpolated strings, as a JSON-ish document.
    var document: [String: [Int]] = [:]
    for i in 0..<4000 { document["key-\(round)-\(i)"] = Array(0..<Int(step() % 40)) }
    checksum &+= document.keys.sorted().joined(separator: ",").utf8.count
    // A linked list of class instances with payloads, then dropped at once.
    var head: Node? = nil
    for i in 0..<4000 {
        head = Node(next: head, payload: [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: Int(step() % 512)),
                    name: "node \(i)")
    }
    while let node = head { checksum &+= node.payload.count + node.name.utf8.count; head = node.next }
    // Strings grown piece by piece, and arrays of them.
    var lines: [String] = []
    for i in 0..<2000 {
        var line = ""
        for _ in 0..<Int(step() % 20) { line += "word\(i) " }
        lines.append(line)
    }
    checksum &+= lines.reduce(0) { $0 &+ $1.utf8.count }
}
var end = timespec()
clock_gettime(CLOCK_MONOTONIC, &end)
var usage = rusage()
getrusage(RUSAGE_SELF.rawValue, &usage)
let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
precondition(checksum != 0)
if CommandLine.arguments.dropFirst().first == "check" {
    print("checksum \(checksum)")
    exit(0)
}
print("swift \(Double(Int(seconds * 10000)) / 10000) \(usage.ru_maxrss)")

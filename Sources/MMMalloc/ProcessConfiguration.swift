// SPDX-License-Identifier: Apache-2.0
import Glibc
import MM

/// The process allocator's configuration, from the environment:
/// - `MM_CAPACITY`: bytes of arena (`512M`, `8G`, `1073741824`); default the
///   cgroup's memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`)
///   when there is one, else physical memory. The arena is lazy: a large
///   capacity costs nothing until used.
/// - `MM_LIMIT`: the process budget (`MemorySystem.limit`, rule R11), at
///   most the capacity; default: the cgroup's `memory.high` when it is set
///   below the capacity, else the capacity. `MemorySystem.process?.setLimit`
///   moves it later.
/// - `MM_HARDENING`: `trap` (default: a bad free stops the process with a
///   report), `report` (reported and ignored), or `full` (`trap`, and every
///   allocation guarded: a header and guard word before it, a red zone after
///   it, poison once freed — see `GuardedAllocation` — so overflows,
///   underflows, double frees and writes after free are caught too).
/// - `MM_POLICY`: the policy of `malloc`: `standard` (default), `failFast`,
///   `retryWhileProgress`, `nonBlocking`.
/// - `MM_STATS=exit`: meminfo, slabinfo and vmstat to standard error at exit.
/// - `MM_VERBOSE`: log every event (failures, stalls, bad frees) to standard error.
/// A bad value is a message on standard error and the default, never a crash.
struct ProcessConfiguration {
    var configuration: MemoryConfiguration
    /// `MM_POLICY`: 0 standard, 1 failFast, 2 retryWhileProgress, 3 nonBlocking (`ProcessAllocator.policy`).
    var policyKind: Int32 = 0
    var statsAtExit = false
    /// `MM_HARDENING=full`: every allocation is a `GuardedAllocation`.
    var guarded = false

    static func fromEnvironment() -> ProcessConfiguration {
        let container = ContainerMemory.current()
        var capacity = defaultCapacity(container)
        if let text = environment("MM_CAPACITY") {
            if let bytes = parseBytes(text), bytes >= 16 << 20 {
                capacity = bytes
            } else {
                ProcessAllocator.writeError("libmmmalloc: MM_CAPACITY=\(text) is not a size of at least 16M (e.g. 512M, 8G); using \(capacity >> 20) MiB")
            }
        }
        var configuration = MemoryConfiguration(capacity: capacity)
        if let high = container.high, high < capacity { configuration.limit = max(1 << 20, high) }
        if let text = environment("MM_LIMIT") {
            if let bytes = parseBytes(text) {
                configuration.limit = min(bytes, capacity)
            } else {
                ProcessAllocator.writeError("libmmmalloc: MM_LIMIT=\(text) is not a size (e.g. 256M, 2G); using \((configuration.limit ?? capacity) >> 20) MiB")
            }
        }
        configuration.name = "mmmalloc"
        configuration.logsEvents = environment("MM_VERBOSE") != nil
        var guarded = false
        switch environment("MM_HARDENING") {
        case nil, "trap": configuration.hardeningAction = .trap
        case "report": configuration.hardeningAction = .report
        case "full":
            configuration.hardeningAction = .trap
            guarded = true
        case let other?:
            ProcessAllocator.writeError("libmmmalloc: MM_HARDENING=\(other) is not trap, report or full; using trap")
        }
        var result = ProcessConfiguration(configuration: configuration)
        result.guarded = guarded
        switch environment("MM_POLICY") {
        case nil, "standard": break
        case "failFast": result.policyKind = 1
        case "retryWhileProgress": result.policyKind = 2
        case "nonBlocking": result.policyKind = 3
        case let other?:
            ProcessAllocator.writeError("libmmmalloc: MM_POLICY=\(other) is not standard, failFast, retryWhileProgress or nonBlocking; using standard")
        }
        switch environment("MM_STATS") {
        case nil: break
        case "exit": result.statsAtExit = true
        case let other?: ProcessAllocator.writeError("libmmmalloc: MM_STATS=\(other) is not exit; ignored")
        }
        return result
    }

    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// `123`, `64K`, `512M`, `8G` (binary units; a trailing `iB`/`B` is allowed).
    static func parseBytes(_ text: String) -> Int? {
        var digits = text.trimmingCharacters()
        for suffix in ["iB", "B"] where digits.hasSuffix(suffix) { digits.removeLast(suffix.count) }
        var shift = 0
        switch digits.last {
        case "K", "k": shift = 10
        case "M", "m": shift = 20
        case "G", "g": shift = 30
        case "T", "t": shift = 40
        default: break
        }
        if shift > 0 { digits.removeLast() }
        guard let value = Int(digits), value > 0, value <= Int.max >> shift else { return nil }
        return value << shift
    }

    /// The cgroup's hard limit, else physical memory.
    static func defaultCapacity(_ container: ContainerMemory) -> Int {
        if let max = container.max { return Swift.max(16 << 20, max) }
        return Swift.max(64 << 20, container.physicalMemory)
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        String(self.drop(while: { $0 == " " || $0 == "\n" }).reversed().drop(while: { $0 == " " || $0 == "\n" }).reversed())
    }
}

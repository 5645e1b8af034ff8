// SPDX-License-Identifier: Apache-2.0
import MM

/// A workload for a `MemorySystem`, read from YAML: an arena, caches that
/// reclaim can shrink, worker threads that allocate, timed events, and the
/// allocation semantics to compare. Choices are drawn from `seed`; the
/// threads, the memory and the time are real.
public struct Scenario: Codable, Sendable {
    /// Short name (the file's, for built-ins).
    public var name: String
    /// One or two sentences: what the scenario shows.
    public var description: String
    /// Seed of every random choice (sizes, jitter).
    public var seed: UInt64
    /// How long each run lasts.
    public var duration: Seconds
    /// The arena each run gets.
    public var arena: ArenaSpec
    /// The semantics that `guarantee: semantics` operations take, one run each
    /// (default: one run, `retryForever`).
    public var semantics: [CommitSemantics]?
    /// A run without progress for this long gets the deadlock verdict (default 2 s).
    public var watchdog: Seconds?
    /// What one unit of the scenario's progress is called in reports, plural:
    /// a completed `transaction: true` operation (or any operation when none
    /// is marked), e.g. `commits` or `requests`. Default `transactions`
    /// (`operations` when no operation is a transaction).
    public var progress: String?
    /// The name of the progress measure in reports (`progress`, or its default).
    public var progressName: String {
        progress ?? (workers.contains { $0.operations.contains { $0.transaction == true } } ? "transactions" : "operations")
    }
    /// Memory groups that caches are charged to.
    public var groups: [GroupSpec]?
    /// Locks that operations hold and shrinkers take.
    public var locks: [LockSpec]?
    /// Caches that shrinkers free under pressure.
    public var caches: [CacheSpec]?
    /// The threads that allocate.
    public var workers: [WorkerSpec]
    /// Things that happen once, at a time into the run.
    public var events: [EventSpec]?

    /// The arena of each run.
    public struct ArenaSpec: Codable, Sendable {
        /// Bytes of arena.
        public var capacity: ByteSize
        /// Watermarks (default: derived from the capacity).
        public var watermarks: WatermarkSpec?
        /// Interval of `allocationStall` reports (default 1 s in scenarios).
        public var stallReportInterval: Seconds?
        /// The process limit at start (`MemorySystem.setLimit`); default the capacity.
        public var limit: ByteSize?
        /// A pressure monitor that moves the limit on `psi-pressure` events.
        public var pressureMonitor: MonitorSpec?
    }

    /// The three watermarks, in bytes.
    public struct WatermarkSpec: Codable, Sendable {
        /// Ordinary requests stop here.
        public var min: ByteSize
        /// Below this the background reclaimer wakes.
        public var low: ByteSize
        /// The background reclaimer reclaims up to this.
        public var high: ByteSize
    }

    /// A memory group (cgroup-like) that caches and operations can be charged to.
    public struct GroupSpec: Codable, Sendable {
        /// The group's name, as operations and events refer to it.
        public var name: String
        /// Added to the group's badness, −1000 ... 1000 (−1000: never killed).
        public var oomScoreAdjust: Int?
        /// The enclosing group (declared before this one).
        public var parent: String?
        /// Limits, as `MemoryLimits` (cgroup v2 `memory.min/low/high/max`).
        public var min: ByteSize?, low: ByteSize?, high: ByteSize?, max: ByteSize?
        /// When the OOM handler kills the group, it must allocate this much
        /// (flush a log, free a tree) before its caches can be released.
        public var exitAllocation: ByteSize?
    }

    /// A pressure monitor over simulated PSI events (`psi-pressure` events).
    public struct MonitorSpec: Codable, Sendable {
        /// The lowest limit it sets.
        public var floor: ByteSize
        /// Fraction of the starting budget one event takes off (default 0.1).
        public var step: Double?
        /// Quiet time before it raises the limit one step (default 1 s).
        public var relaxAfter: Seconds?
    }

    /// A lock, optionally declared as taken by reclaim of a domain.
    public struct LockSpec: Codable, Sendable {
        /// The lock's name, as operations and shrinkers refer to it.
        public var name: String
    }

    /// A cache of objects that a shrinker frees under pressure.
    public struct CacheSpec: Codable, Sendable {
        /// The cache's name, as operations and events refer to it.
        public var name: String
        /// Bytes per object.
        public var objectSize: ByteSize
        /// Objects allocated when the run starts.
        public var count: Int
        /// The shrinker's seeks (default 2).
        public var seeks: Int?
        /// The reclaim domain of its shrinker: `filesystem`, `io`, or a new name (within `filesystem`); none: any context.
        public var domain: String?
        /// A lock its shrinker takes for every scan.
        public var lock: String?
        /// The group its objects are charged to.
        public var group: String?
        /// Whether its shrinker may free objects (default true); false: only an OOM kill of its group frees them.
        public var reclaimable: Bool?
    }

    /// Threads that loop over `operations` until the run ends.
    public struct WorkerSpec: Codable, Sendable {
        /// The worker's name in reports.
        public var name: String
        /// Threads running this worker (default 1).
        public var threads: Int?
        /// The steps of the loop, in order.
        public var operations: [OperationSpec]
    }

    /// One step of a worker's loop.
    public struct OperationSpec: Codable, Sendable {
        /// Bytes per allocation: `4KiB`, or a range `64KiB..256KiB` drawn uniformly.
        public var size: SizeRange
        /// Allocations per step (default 1); all are held, then freed.
        public var count: Int?
        /// `contiguous`, `virtual` or `automatic` (default `contiguous`).
        public var placement: String?
        /// A preset: `standard`, `failFast`, `retryWhileProgress`, `nonBlocking`, `atomic` (default `standard`).
        public var policy: String?
        /// `retryForever`, `useReserves`, or `semantics` (the run's); none: fallible.
        public var guarantee: String?
        /// Scopes entered around the step: `excluding <domain>...`, `noDirectReclaim`, `nonBlocking`, `quiet`, `retryForever`, `useReserves`.
        public var scopes: [String]?
        /// Locks held around the step, in order.
        public var locks: [String]?
        /// How long the memory (and locks) are held.
        public var hold: Seconds?
        /// Steps per second per thread (default: as fast as possible).
        public var rate: Double?
        /// Add the allocations to this cache instead of freeing them (a cache that grows).
        public var grow: String?
        /// A completed step counts as a transaction (the progress the watchdog watches).
        public var transaction: Bool?
        /// The group the allocations are charged to (`policy.group`).
        public var group: String?
    }

    /// Something that happens once, at `at` seconds into the run.
    public struct EventSpec: Codable, Sendable {
        /// Seconds into the run.
        public var at: Seconds
        /// `pressure-spike` (allocate `bytes` for `duration`, charged to `group` if given),
        /// `grow-cache` (add `bytes` of objects to `cache`), `kill-group` (free everything
        /// charged to `group`), `set-limit` (the process limit to `bytes`), `psi-pressure`
        /// (a simulated PSI event every 250 ms for `duration`, default one event),
        /// `fragment-cache` (free every other object of `cache`: free memory without large blocks).
        public var action: String
        /// Bytes to allocate (`pressure-spike`) or to add (`grow-cache`).
        public var bytes: ByteSize?
        /// How long a `pressure-spike` holds its memory.
        public var duration: Seconds?
        /// The cache a `grow-cache` grows.
        public var cache: String?
        /// The group a `kill-group` empties.
        public var group: String?
    }
}

/// What an allocation that must not fail does: the three answers of the
/// `__GFP_NOFAIL` debate.
public enum CommitSemantics: String, Codable, Sendable, CaseIterable {
    /// Reclaim and wait as long as it takes; never OOM-kill, never reserves (what XFS asked for).
    case retryForever
    /// Today's kernel `__GFP_NOFAIL`: after reclaim fails, the OOM handler and the `.high` reserve.
    case useReserves
    /// A fallible `.standard` allocation in a caller loop that sleeps 20 ms and retries (XFS `kmem_alloc`, 2021).
    case retryLoop
    /// The kernel as it was at the time of the 2021 thread, emulated rule by
    /// rule (see README, "The debate"): `guarantee: semantics` is
    /// `__GFP_NOFAIL` (`useReserves`); there is no NOFAIL scope (`retryForever`
    /// and `useReserves` scopes are ignored); an operation in an `excluding`
    /// scope stands for explicit `GFP_NOFS`/`GFP_NOIO` flags, with which
    /// `kvmalloc` did not fall back to vmalloc (`kvmalloc_node`: "if ((flags &
    /// GFP_KERNEL) != GFP_KERNEL) return kmalloc_node(...)"), so `automatic`
    /// placement becomes `contiguous`; `NOWAIT` stays `NOWAIT`.
    case kernel2021
    /// `retryForever` for `guarantee: semantics` operations, run inside a
    /// `.noDirectReclaim` scope: they never reclaim themselves and wait for
    /// frees and the background reclaimer (Dave Chinner: turn off direct
    /// reclaim in the commit path).
    case noDirectReclaim
    /// Every operation that holds a lock which a shrinker of some domain
    /// takes runs inside `.excluding(that domain)`: the scopes the
    /// reclaim-recursion checker asked for, added (claim 8 of the debate).
    case scopesAdded
    /// `useReserves` for `guarantee: semantics` operations, but a killed
    /// group's exit allocation is not charged to it, so it gets no
    /// `.oomVictim` reserve (claim 2 of the debate: with and without the tier).
    case noVictimReserve
    /// A naive rule that swift-mm's R3 rejects: a guarantee scope upgrades
    /// every call in it, non-blocking and fail-fast ones included, to a
    /// guaranteed (blocking) allocation; `guarantee: semantics` is `retryForever`.
    case naiveScope
}

/// A byte count written `4096`, `64KiB`, `4MiB` or `1GiB`.
public struct ByteSize: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The number of bytes.
    public var bytes: Int

    /// A size of `bytes`.
    public init(_ bytes: Int) { self.bytes = bytes }

    /// Reads `4096`, `"64KiB"`, `"4MiB"` or `"1GiB"`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int.self) { bytes = n; return }
        let text = try container.decode(String.self)
        guard let n = ByteSize.parse(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "\"\(text)\" is not a size (examples: 4096, 64KiB, 4MiB, 1GiB)")
        }
        bytes = n
    }

    /// Writes the shortest exact form (`64KiB`).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    static func parse(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: " ")
        for (suffix, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)] where t.hasSuffix(suffix) {
            guard let n = Int(t.dropLast(suffix.count).trimmingCharacters(in: " ")) else { return nil }
            let (v, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
            return overflow ? nil : v
        }
        return Int(t)
    }

    /// A one-line description, as events and reports print it.
    public var description: String {
        if bytes != 0 && bytes % (1 << 30) == 0 { return "\(bytes >> 30)GiB" }
        if bytes != 0 && bytes % (1 << 20) == 0 { return "\(bytes >> 20)MiB" }
        if bytes != 0 && bytes % (1 << 10) == 0 { return "\(bytes >> 10)KiB" }
        return "\(bytes)"
    }
}

/// A size or a range of sizes: `4KiB` or `64KiB..256KiB`.
public struct SizeRange: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The smallest size.
    public var lower: Int
    /// The largest size (equal to `lower` for one size).
    public var upper: Int

    /// Sizes from `lower` to `upper`.
    public init(_ lower: Int, _ upper: Int) { self.lower = lower; self.upper = upper }

    /// Reads `4KiB` or `64KiB..256KiB`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int.self) { lower = n; upper = n; return }
        let text = try container.decode(String.self)
        let parts = text.split(separator: ".", omittingEmptySubsequences: true)
        if text.contains(".."), parts.count == 2, let a = ByteSize.parse(String(parts[0])), let b = ByteSize.parse(String(parts[1])) {
            lower = a; upper = b; return
        }
        if let n = ByteSize.parse(text) { lower = n; upper = n; return }
        throw DecodingError.dataCorruptedError(in: container, debugDescription: "\"\(text)\" is not a size or a range (examples: 4KiB, 64KiB..256KiB)")
    }

    /// Writes the form it reads.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// A one-line description, as events and reports print it.
    public var description: String {
        lower == upper ? ByteSize(lower).description : "\(ByteSize(lower))..\(ByteSize(upper))"
    }
}

/// A duration written `6s`, `250ms`, `50us` or a number of seconds.
public struct Seconds: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The duration in seconds.
    public var value: Double

    /// A duration of `value` seconds.
    public init(_ value: Double) { self.value = value }

    /// Reads `6s`, `250ms`, `50us` or a number of seconds.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Double.self) { value = n; return }
        let text = try container.decode(String.self).trimmingCharacters(in: " ")
        for (suffix, factor) in [("ms", 1e-3), ("us", 1e-6), ("s", 1.0)] where text.hasSuffix(suffix) {
            if let n = Double(text.dropLast(suffix.count)) { value = n * factor; return }
        }
        throw DecodingError.dataCorruptedError(in: container, debugDescription: "\"\(text)\" is not a duration (examples: 6s, 250ms, 50us)")
    }

    /// Writes a number of seconds.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// A one-line description, as events and reports print it.
    public var description: String {
        value >= 1 || value == 0 ? "\(value)s" : value >= 1e-3 ? "\(value * 1e3)ms" : "\(value * 1e6)us"
    }

    var duration: Duration { .nanoseconds(Int64(value * 1e9)) }
}

extension StringProtocol {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}

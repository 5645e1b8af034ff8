// SPDX-License-Identifier: Apache-2.0

/// A group's budget, in bytes, with the meanings of cgroup v2's
/// `memory.min`, `memory.low`, `memory.high` and `memory.max` (rules R8–R10).
///
/// ```swift
/// let tenant = mm.makeGroup(name: "tenant-a", limits: .init(low: 64 << 20, high: 192 << 20, max: 256 << 20))
/// ```
///
/// - `min`: reclaim on behalf of anything but the group itself never takes
///   the group below this (hard protection).
/// - `low`: such reclaim takes the group below this only when nothing
///   unprotected is reclaimable (best-effort protection).
/// - `high`: over it, blocking requests charged to the group reclaim from
///   it and are throttled; never an OOM kill, never a failure.
/// - `max`: a hard limit: group reclaim, then the OOM handler within the
///   group's subtree, then failure for fallible requests.
///
/// Coherent limits have no negative value, `high ≤ max` and `min ≤ max`.
/// Kernel analogue: `memory.min`, `memory.low`, `memory.high`, `memory.max`.
public struct MemoryLimits: Sendable, Hashable, CustomStringConvertible {
    /// Protection that reclaim for others never takes away. Default 0.
    public var min: Int
    /// Protection that reclaim for others takes away only as a last resort. Default 0.
    public var low: Int
    /// The throttling limit; nil: none.
    public var high: Int?
    /// The hard limit; nil: none.
    public var max: Int?

    /// Limits in bytes; the defaults mean "no protection, no limit".
    public init(min: Int = 0, low: Int = 0, high: Int? = nil, max: Int? = nil) {
        self.min = min
        self.low = low
        self.high = high
        self.max = max
    }

    /// Why these limits are incoherent, or nil when they are coherent.
    public var incoherence: String? {
        if min < 0 { return "min \(min) is negative" }
        if low < 0 { return "low \(low) is negative" }
        if let high, high < 0 { return "high \(high) is negative" }
        if let max, max < 0 { return "max \(max) is negative" }
        if let high, let max, high > max { return "high \(high) is above max \(max)" }
        if let max, min > max { return "min \(min) is above max \(max)" }
        return nil
    }

    /// `memory.min`-style text: `min 0, low 64 MiB, high max, max 256 MiB`.
    public var description: String {
        func bytes(_ b: Int?) -> String {
            guard let b else { return "max" }
            return b % (1 << 20) == 0 ? "\(b >> 20) MiB" : b % 1024 == 0 ? "\(b >> 10) KiB" : "\(b) B"
        }
        return "min \(bytes(min)), low \(bytes(low)), high \(bytes(high)), max \(bytes(max))"
    }
}

/// How often a group (and its descendants: the counts are hierarchical)
/// met its limits. Kernel analogue: cgroup v2 `memory.events`.
public struct MemoryGroupEvents: Sendable, Hashable {
    /// Reclaim took memory from a group below its effective `low` (R10).
    public var low: Int
    /// Charges throttled above `high` (R9).
    public var high: Int
    /// Charges that found a group at its `max` (R8).
    public var max: Int
    /// Charges at `max` about to fail, and OOM handler runs for the group (R8).
    public var oom: Int
    /// OOM kills in the group's subtree.
    public var oomKill: Int

    /// Counts, all zero by default.
    public init(low: Int = 0, high: Int = 0, max: Int = 0, oom: Int = 0, oomKill: Int = 0) {
        self.low = low
        self.high = high
        self.max = max
        self.oom = oom
        self.oomKill = oomKill
    }
}

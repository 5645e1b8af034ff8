// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A unit that allocations are charged to, and the unit the OOM handler
/// picks victims among. Created with `MemorySystem.makeGroup`; charged
/// through `policy.group` or a `.charging(group)` scope; usage is
/// hierarchical (a group's usage includes its descendants').
/// Kernel analogue: a memory cgroup (`memory.current`, `memory.oom.group`).
///
/// Groups compare by identity. A group lives in its system until it is
/// removed (`removeGroup`), or until nothing refers to it and it holds no
/// memory (then it disappears from `statistics().groups`).
public final class MemoryGroup: Sendable, Hashable, CustomStringConvertible {
    /// The group's name, for reports.
    public let name: String
    /// The enclosing group, charged hierarchically.
    public let parent: MemoryGroup?
    /// `parent` without reference counting, for the walks up the hierarchy
    /// that every charge and uncharge makes (`parent` keeps it alive).
    let parentReference: Unmanaged<MemoryGroup>?
    /// Added to the OOM score in thousandths of capacity; -1000 never killed.
    /// Kernel analogue: `oom_score_adj`.
    public let oomScoreAdjust: Int
    let onOOMKill: @Sendable (MemoryGroup) -> Void
    /// Index in the system's group table (1-based; stored in page metadata).
    let id: UInt32
    let usageBytes = Atomic<Int>(0)
    let ownBytes = Atomic<Int>(0)
    /// Set while the group is an OOM victim that has not released its memory.
    let victim = VictimCell()
    /// Live child groups (removal is refused while there are any).
    let childCount = Atomic<Int>(0)
    /// Removed from its system: charging it is an invalid request.
    let removed = Atomic<Bool>(false)
    /// `min`/`low`/`high`/`max`, read without a lock by charge and reclaim.
    let limitWords = GroupLimitWords()
    /// Local `memory.events` counts (each also counted on every ancestor).
    let eventWords = GroupEventWords()

    /// Whether the group was removed (`MemorySystem.removeGroup`) or dropped
    /// after its last reference went away; it can no longer be charged.
    public var isRemoved: Bool { removed.load(ordering: .acquiring) }

    struct VictimState: Sendable {
        var killedAt: ContinuousClock.Instant
        var usageAtKill: Int
        var reportedStuck = false
    }

    init(name: String, parent: MemoryGroup?, oomScoreAdjust: Int, id: UInt32,
         onOOMKill: @escaping @Sendable (MemoryGroup) -> Void) {
        self.name = name
        self.parent = parent
        self.parentReference = parent.map { Unmanaged.passUnretained($0) }
        self.oomScoreAdjust = oomScoreAdjust
        self.id = id
        self.onOOMKill = onOOMKill
    }

    /// Bytes currently charged to this group and its descendants.
    public var usage: Int { usageBytes.load(ordering: .relaxed) }

    /// Bytes charged to this group itself (not its descendants).
    public var ownUsage: Int { ownBytes.load(ordering: .relaxed) }

    /// Charges without a limit check: a force-charge (R8's `.useReserves`
    /// and requests inside reclaim), or an uncharge with a negative count.
    func charge(_ bytes: Int) {
        ownBytes.wrappingAdd(bytes, ordering: .relaxed)
        forEachLevel { group in
            group.usageBytes.wrappingAdd(bytes, ordering: .relaxed)
            return true
        }
    }

    /// Calls `body` with this group, then each ancestor up to the root,
    /// borrowed (no reference counting: each group's `parent` keeps the next
    /// one alive while this one lives), until `body` returns false.
    @inline(__always)
    func forEachLevel(_ body: (MemoryGroup) -> Bool) {
        var level = Unmanaged.passUnretained(self)
        while let next = level._withUnsafeGuaranteedRef({ group in body(group) ? group.parentReference : nil }) {
            level = next
        }
    }

    func uncharge(_ bytes: Int) { charge(-bytes) }

    /// Chosen by the OOM handler and not yet released memory: its
    /// allocations (and its descendants') get the `.oomVictim` tier.
    var isOOMVictim: Bool {
        var g: MemoryGroup? = self
        while let group = g {
            if group.victim.isSet { return true }
            g = group.parent
        }
        return false
    }

    /// Whether the two are the same (see the type's notion of identity).
    public static func == (a: MemoryGroup, b: MemoryGroup) -> Bool { a === b }
    /// Hashes the same parts that `==` compares.
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
    /// A one-line description, as events and reports print it.
    public var description: String { "MemoryGroup(\(name), usage \(usage >> 10) kB)" }
}

/// Why a group operation was refused.
public struct MemoryGroupError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, to match on.
    public enum Code: Sendable, Hashable {
        /// The group (or a descendant) is still charged memory.
        case hasUsage
        /// The group has child groups.
        case hasChildren
        /// The group was removed already.
        case alreadyRemoved
        /// The group belongs to another `MemorySystem`.
        case foreignGroup
        /// The limits given are incoherent (negative, `high > max`, `min > max`).
        case incoherentLimits
    }
    /// What went wrong.
    public var code: Code
    /// The same in words, with the group's name and numbers.
    public var message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A one-line description, as events and reports print it.
    public var description: String { message }
}

/// Payload of `MemoryEvent.oomKill`.
public struct OOMKill: Sendable, CustomStringConvertible {
    /// The group told to release memory.
    public var victim: String
    /// `ownUsage + oomScoreAdjust × capacity / 1000`, in bytes.
    public var score: Int
    /// Bytes charged to the group (and its descendants) at that moment.
    public var usage: Int
    /// The group's `oomScoreAdjust`.
    public var oomScoreAdjust: Int
    /// What triggered it: the request, or the background reclaimer serving waiters.
    public var trigger: String

    /// A one-line description, as events and reports print it.
    public var description: String {
        "out of memory: killed group \(victim) (score \(score >> 10) kB, usage \(usage >> 10) kB, oom_score_adj \(oomScoreAdjust)); trigger: \(trigger)"
    }
}

/// Payload of `MemoryEvent.oomVictimStuck`.
public struct OOMVictimStuck: Sendable, CustomStringConvertible {
    /// The group told to release memory.
    public var victim: String
    /// Bytes charged to the group (and its descendants) at that moment.
    public var usage: Int
    /// How long the victim has had to release memory.
    public var waited: Duration

    /// A one-line description, as events and reports print it.
    public var description: String {
        "OOM victim \(victim) has not released memory after \(waited) (usage \(usage >> 10) kB); skipping it"
    }
}

/// A group's OOM-victim state behind a lock, with a flag that the slow path
/// reads without the lock (every charged request asks whether its group or
/// an ancestor is a victim).
final class VictimCell: Sendable {
    private let state = Locked<MemoryGroup.VictimState?>(nil)
    private let marked = Atomic<Bool>(false)

    /// Whether a victim state is set (a relaxed read: a hint for the reserve tier).
    var isSet: Bool { marked.load(ordering: .relaxed) }

    /// Reads or changes the state under its lock; the flag follows.
    func withLock<R: Sendable>(_ body: (inout MemoryGroup.VictimState?) -> R) -> R {
        state.withLock { value in
            let result = body(&value)
            marked.store(value != nil, ordering: .relaxed)
            return result
        }
    }
}

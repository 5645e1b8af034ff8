// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// The group's limits as the charge and reclaim paths read them, without a
/// lock: one atomic per limit, `Int.max` meaning "none".
/// Kernel analogue: `struct page_counter` (`min`, `low`, `high`, `max`).
struct GroupLimitWords: ~Copyable, Sendable {
    let min = Atomic<Int>(0)
    let low = Atomic<Int>(0)
    let high = Atomic<Int>(.max)
    let max = Atomic<Int>(.max)

    func store(_ limits: MemoryLimits) {
        min.store(limits.min, ordering: .relaxed)
        low.store(limits.low, ordering: .relaxed)
        high.store(limits.high ?? .max, ordering: .relaxed)
        max.store(limits.max ?? .max, ordering: .relaxed)
    }

    func load() -> MemoryLimits {
        let high = high.load(ordering: .relaxed), max = max.load(ordering: .relaxed)
        return MemoryLimits(min: min.load(ordering: .relaxed), low: low.load(ordering: .relaxed),
                            high: high == .max ? nil : high, max: max == .max ? nil : max)
    }
}

/// Local event counts of one group; `MemoryGroup.events` adds them up the tree.
struct GroupEventWords: ~Copyable, Sendable {
    let low = Atomic<Int>(0), high = Atomic<Int>(0), max = Atomic<Int>(0)
    let oom = Atomic<Int>(0), oomKill = Atomic<Int>(0)
}

/// Which `memory.events` counter an event goes to.
enum GroupEventKind: Sendable {
    case low, high, max, oom, oomKill
}

extension MemoryGroup {
    /// The group's limits (cgroup v2 `memory.min/low/high/max`); set with
    /// `MemorySystem.setLimits(_:for:)` or `makeGroup(limits:)`.
    public var limits: MemoryLimits { limitWords.load() }

    /// How often the group and its descendants met their limits
    /// (hierarchical, as cgroup v2 `memory.events`).
    public var events: MemoryGroupEvents {
        MemoryGroupEvents(low: eventWords.low.load(ordering: .relaxed), high: eventWords.high.load(ordering: .relaxed),
                          max: eventWords.max.load(ordering: .relaxed), oom: eventWords.oom.load(ordering: .relaxed),
                          oomKill: eventWords.oomKill.load(ordering: .relaxed))
    }

    /// Counts an event on this group and every ancestor (hierarchical counts).
    /// Kernel analogue: `memcg_memory_event`.
    func count(_ kind: GroupEventKind) {
        var g: MemoryGroup? = self
        while let group = g {
            switch kind {
            case .low: group.eventWords.low.wrappingAdd(1, ordering: .relaxed)
            case .high: group.eventWords.high.wrappingAdd(1, ordering: .relaxed)
            case .max: group.eventWords.max.wrappingAdd(1, ordering: .relaxed)
            case .oom: group.eventWords.oom.wrappingAdd(1, ordering: .relaxed)
            case .oomKill: group.eventWords.oomKill.wrappingAdd(1, ordering: .relaxed)
            }
            g = group.parent
        }
    }

    /// Charges `bytes` to this group and every ancestor unless that takes
    /// one of them above its `max`: then nothing is charged and the first
    /// such group (nearest to this one) is returned. Each level is a
    /// compare-and-exchange that never stores a usage above `max`, so no
    /// thread, not even a reader, ever sees a group over its limit because
    /// of a charge that fails; levels already charged are rolled back.
    /// Kernel analogue: `page_counter_try_charge`.
    func tryCharge(_ bytes: Int) -> MemoryGroup? {
        var refused: Unmanaged<MemoryGroup>?
        forEachLevel { group in
            let max = group.limitWords.max.load(ordering: .relaxed)
            var current = group.usageBytes.load(ordering: .relaxed)
            while true {
                if bytes > 0 && current + bytes > max {
                    refused = Unmanaged.passUnretained(group)
                    return false
                }
                let (exchanged, original) = group.usageBytes.compareExchange(
                    expected: current, desired: current + bytes, ordering: .relaxed)
                if exchanged { return true }
                current = original
            }
        }
        guard let refused else {
            ownBytes.wrappingAdd(bytes, ordering: .relaxed)
            return nil
        }
        // Roll back every level below the one that refused.
        forEachLevel { group in
            guard Unmanaged.passUnretained(group).toOpaque() != refused.toOpaque() else { return false }
            group.usageBytes.wrappingSubtract(bytes, ordering: .relaxed)
            return true
        }
        return refused.takeUnretainedValue()
    }

    /// The group on the path to the root whose usage is furthest above its
    /// `high` (in bytes), with that overage; nil when none is above.
    var highestOverage: (group: MemoryGroup, bytes: Int)? {
        var best: (group: Unmanaged<MemoryGroup>, bytes: Int)?
        forEachLevel { group in
            let high = group.limitWords.high.load(ordering: .relaxed)
            let over = group.usage - high
            if high != .max && over > 0 && over > (best?.bytes ?? 0) { best = (Unmanaged.passUnretained(group), over) }
            return true
        }
        return best.map { ($0.group.takeUnretainedValue(), $0.bytes) }
    }

    /// Whether `self` is `ancestor` or lies below it.
    func isWithin(_ ancestor: MemoryGroup) -> Bool {
        var g: MemoryGroup? = self
        while let group = g {
            if group === ancestor { return true }
            g = group.parent
        }
        return false
    }
}

/// Effective `min` and `low` of every group, computed once per reclaim pass
/// as cgroup v2 does: a group's protection is its own setting, capped by
/// its usage and by its parent's effective protection; when the children of
/// one parent claim more than the parent has, each gets a share in
/// proportion to its protected usage. Kernel analogue:
/// `mem_cgroup_calculate_protection` / `effective_protection`.
struct GroupProtection: Sendable {
    /// Effective protection in bytes by group identifier.
    private(set) var min: [UInt32: Int] = [:]
    private(set) var low: [UInt32: Int] = [:]

    init(groups: [MemoryGroup]) {
        var children: [ObjectIdentifier: [MemoryGroup]] = [:]
        var roots: [MemoryGroup] = []
        for g in groups {
            if let p = g.parent { children[ObjectIdentifier(p), default: []].append(g) } else { roots.append(g) }
        }
        func visit(_ siblings: [MemoryGroup], parentMin: Int, parentLow: Int) {
            let claims = siblings.map { g -> (min: Int, low: Int) in
                let usage = g.usage
                return (Swift.min(usage, g.limitWords.min.load(ordering: .relaxed)),
                        Swift.min(usage, g.limitWords.low.load(ordering: .relaxed)))
            }
            let claimedMin = claims.reduce(0) { $0 + $1.min }, claimedLow = claims.reduce(0) { $0 + $1.low }
            for (g, claim) in zip(siblings, claims) {
                let eMin = claimedMin > parentMin && claimedMin > 0 ? Int(Double(claim.min) * Double(parentMin) / Double(claimedMin)) : claim.min
                let eLow = claimedLow > parentLow && claimedLow > 0 ? Int(Double(claim.low) * Double(parentLow) / Double(claimedLow)) : claim.low
                min[g.id] = eMin
                low[g.id] = eLow
                visit(children[ObjectIdentifier(g)] ?? [], parentMin: eMin, parentLow: eLow)
            }
        }
        visit(roots, parentMin: .max, parentLow: .max)
    }

    /// How reclaim for others may treat `group` (R10): usage at or below
    /// the effective `min` is untouchable, at or below the effective `low`
    /// only when nothing unprotected is reclaimable.
    func protection(of group: MemoryGroup) -> Level {
        let usage = group.usage
        if let m = min[group.id], m > 0, usage <= m { return .min }
        if let l = low[group.id], l > 0, usage <= l { return .low }
        return .none
    }

    /// A group's protection against reclaim for others.
    enum Level: Sendable { case none, low, min }
}

// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// The system's groups and the OOM handler.
/// Kernel analogue: `mm/oom_kill.c` (`out_of_memory`, `oom_badness`).
final class OOMKiller: @unchecked Sendable {  // `direct` is a table of atomics, written under the groups lock
    /// The live groups by identifier (the identifier is stored in page metadata).
    private let groups = Locked<(byID: [UInt32: MemoryGroup], nextID: UInt32)>(([:], 1))
    private let inProgress = Locked<Bool>(false)
    let capacity: Int
    let reapTimeout: Duration
    let events: EventHub
    /// The live groups with identifiers below `directIDs`, as unretained
    /// object addresses (0: none), for `uncharge(groupID:bytes:)` without the
    /// lock: written under the lock whenever `byID` changes for such an id.
    private let direct: UnsafeMutablePointer<Atomic<UInt>>
    static let directIDs = 4096

    init(capacity: Int, reapTimeout: Duration, events: EventHub) {
        self.capacity = capacity
        self.reapTimeout = reapTimeout
        self.events = events
        direct = .allocate(capacity: Self.directIDs)
        for i in 0..<Self.directIDs { (direct + i).initialize(to: Atomic(0)) }
    }

    deinit {
        direct.deinitialize(count: Self.directIDs)
        direct.deallocate()
    }

    /// Notes `group` (or its absence, nil) under `id` in the direct table (lock held).
    private func setDirect(_ id: UInt32, _ group: MemoryGroup?) {
        guard id < Self.directIDs else { return }
        let address = group.map { UInt(bitPattern: Unmanaged.passUnretained($0).toOpaque()) } ?? 0
        direct[Int(id)].store(address, ordering: .releasing)
    }

    /// Uncharges `bytes` that a freed object or block had charged to the
    /// group with identifier `id`. Without the lock for the first
    /// `directIDs` identifiers: the group is alive, because what is being
    /// freed is still charged to it (a group holding a charge is never
    /// removed or pruned), and it is retained while it is uncharged.
    func uncharge(groupID id: UInt32, bytes: Int) {
        if id < Self.directIDs {
            let address = direct[Int(id)].load(ordering: .acquiring)
            if let raw = UnsafeRawPointer(bitPattern: address) {
                Unmanaged<MemoryGroup>.fromOpaque(raw).takeUnretainedValue().uncharge(bytes)
                return
            }
        }
        group(id: id)?.uncharge(bytes)
    }

    func makeGroup(name: String, parent: MemoryGroup?, oomScoreAdjust: Int, limits: MemoryLimits,
                   onOOMKill: @escaping @Sendable (MemoryGroup) -> Void) -> MemoryGroup {
        groups.withLock { table in
            pruneAbandoned(&table.byID)
            let group = MemoryGroup(name: name, parent: parent, oomScoreAdjust: max(-1000, min(1000, oomScoreAdjust)),
                                    id: table.nextID, onOOMKill: onOOMKill)
            table.nextID &+= 1
            group.limitWords.store(limits)
            table.byID[group.id] = group
            setDirect(group.id, group)
            parent?.childCount.wrappingAdd(1, ordering: .relaxed)
            return group
        }
    }

    /// Whether `group` is a live group of this system; the error to throw otherwise.
    func checkMember(_ group: MemoryGroup) throws(MemoryGroupError) {
        let member = groups.withLock { $0.byID[group.id] === group }
        guard member else {
            throw group.isRemoved
                ? MemoryGroupError(.alreadyRemoved, "group \(group.name) was removed")
                : MemoryGroupError(.foreignGroup, "group \(group.name) belongs to another MemorySystem")
        }
    }

    /// Removes `group`: refused while it (or a descendant) is charged, or
    /// while it has children. A removed group cannot be charged again.
    /// Kernel analogue: `rmdir` of a memory cgroup (refused with `EBUSY`).
    func remove(_ group: MemoryGroup) throws(MemoryGroupError) {
        try groups.withLock { (table) throws(MemoryGroupError) in
            guard table.byID[group.id] === group else {
                throw group.isRemoved
                    ? MemoryGroupError(.alreadyRemoved, "group \(group.name) was already removed")
                    : MemoryGroupError(.foreignGroup, "group \(group.name) belongs to another MemorySystem")
            }
            guard group.usage == 0 else {
                throw MemoryGroupError(.hasUsage, "group \(group.name) is still charged \(group.usage) bytes; free them first")
            }
            let children = group.childCount.load(ordering: .relaxed)
            guard children == 0 else {
                throw MemoryGroupError(.hasChildren, "group \(group.name) has \(children) child group(s); remove them first")
            }
            table.byID[group.id] = nil
            setDirect(group.id, nil)
            group.removed.store(true, ordering: .releasing)
            group.parent?.childCount.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// Drops groups nobody refers to any more (the table holds the only
    /// reference) and that hold no memory: they can never be charged or
    /// matter to the OOM handler again. Children refer to their parent, so a
    /// parent goes only after its children.
    private func pruneAbandoned(_ byID: inout [UInt32: MemoryGroup]) {
        for id in Array(byID.keys) {
            guard byID[id]!.usage == 0, isKnownUniquelyReferenced(&byID[id]!) else { continue }
            setDirect(id, nil)
            let group = byID.removeValue(forKey: id)!
            group.removed.store(true, ordering: .releasing)
            group.parent?.childCount.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// In a forked child: an OOM kill that a thread of the parent was making
    /// is not in progress here.
    func resetAfterFork() { inProgress.withLock { $0 = false } }

    func group(id: UInt32) -> MemoryGroup? {
        groups.withLock { $0.byID[id] }
    }

    /// The live groups in creation order (abandoned empty ones are dropped first).
    var all: [MemoryGroup] {
        groups.withLock { table in
            pruneAbandoned(&table.byID)
            return table.byID.values.sorted { $0.id < $1.id }
        }
    }

    /// Whether a victim has been told to release memory and still holds some
    /// (within its reap timeout).
    var hasReleasingVictim: Bool {
        let now = ContinuousClock.now
        return all.contains { g in
            guard let state = g.victim.withLock({ $0 }) else { return false }
            return g.ownUsage > 0 && now - state.killedAt < reapTimeout
        }
    }

    /// `ownUsage + adjust × capacity / 1000`; nil for groups that may not be killed.
    func score(_ g: MemoryGroup) -> Int? {
        guard g.oomScoreAdjust > -1000 else { return nil }
        return g.ownUsage + g.oomScoreAdjust * (capacity / 1000)
    }

    /// Picks a victim and calls its `onOOMKill` (once, outside every
    /// allocator lock). While an earlier victim is still releasing memory
    /// (within `oomReapTimeout`) no new victim is chosen and the caller
    /// waits for that one, as the kernel does.
    func handle(trigger: String, within root: MemoryGroup? = nil) -> OOMOutcome {
        guard inProgress.withLock({ busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }) else { return .waitingForVictim(victim: "(another OOM kill in progress)") }
        defer { inProgress.withLock { $0 = false } }

        let now = ContinuousClock.now
        var skip = Set<ObjectIdentifier>()
        let candidates = all.filter { root == nil || $0.isWithin(root!) }
        for g in candidates {
            guard let state = g.victim.withLock({ $0 }) else { continue }
            if g.ownUsage == 0 {
                g.victim.withLock { $0 = nil }          // it released everything
            } else if now - state.killedAt < reapTimeout {
                return .waitingForVictim(victim: g.name) // still releasing: wait for it (a victim's
                                                        // release takes time; killing it again would not help)
            } else if g.ownUsage < state.usageAtKill {
                g.victim.withLock { $0 = nil }          // it released what it could: not stuck,
                skip.insert(ObjectIdentifier(g))        // but not the next victim in the same breath
            } else {
                skip.insert(ObjectIdentifier(g))
                let first = g.victim.withLock { v -> Bool in
                    defer { v?.reportedStuck = true }
                    return v?.reportedStuck == false
                }
                if first {
                    events.emit(.oomVictimStuck(OOMVictimStuck(victim: g.name, usage: g.usage, waited: now - state.killedAt)))
                }
            }
        }
        var best: (group: MemoryGroup, score: Int)?
        for g in candidates where !skip.contains(ObjectIdentifier(g)) && g.ownUsage > 0 {
            guard let s = score(g) else { continue }
            if best == nil || s > best!.score { best = (g, s) }
        }
        guard let (victim, score) = best else { return .noVictim }
        victim.victim.withLock { $0 = MemoryGroup.VictimState(killedAt: now, usageAtKill: victim.ownUsage) }
        victim.count(.oomKill)
        events.emit(.oomKill(OOMKill(victim: victim.name, score: score, usage: victim.usage,
                                     oomScoreAdjust: victim.oomScoreAdjust, trigger: trigger)))
        victim.onOOMKill(victim)
        return .killed(victim: victim.name)
    }
}

// SPDX-License-Identifier: Apache-2.0

/// The system's groups and the OOM handler.
/// Kernel analogue: `mm/oom_kill.c` (`out_of_memory`, `oom_badness`).
final class OOMKiller: Sendable {
    private let groups = Locked<[MemoryGroup]>([])
    private let inProgress = Locked<Bool>(false)
    let capacity: Int
    let reapTimeout: Duration
    let events: EventHub

    init(capacity: Int, reapTimeout: Duration, events: EventHub) {
        self.capacity = capacity
        self.reapTimeout = reapTimeout
        self.events = events
    }

    func makeGroup(name: String, parent: MemoryGroup?, oomScoreAdjust: Int,
                   onOOMKill: @escaping @Sendable (MemoryGroup) -> Void) -> MemoryGroup {
        groups.withLock { list in
            let group = MemoryGroup(name: name, parent: parent, oomScoreAdjust: max(-1000, min(1000, oomScoreAdjust)),
                                    id: UInt32(list.count + 1), onOOMKill: onOOMKill)
            list.append(group)
            return group
        }
    }

    /// In a forked child: an OOM kill that a thread of the parent was making
    /// is not in progress here.
    func resetAfterFork() { inProgress.withLock { $0 = false } }

    func group(id: UInt32) -> MemoryGroup? {
        groups.withLock { id > 0 && Int(id) <= $0.count ? $0[Int(id) - 1] : nil }
    }

    var all: [MemoryGroup] { groups.withLock { $0 } }

    /// `ownUsage + adjust × capacity / 1000`; nil for groups that may not be killed.
    func score(_ g: MemoryGroup) -> Int? {
        guard g.oomScoreAdjust > -1000 else { return nil }
        return g.ownUsage + g.oomScoreAdjust * (capacity / 1000)
    }

    /// Picks a victim and calls its `onOOMKill` (once, outside every
    /// allocator lock). While an earlier victim is still releasing memory
    /// (within `oomReapTimeout`) no new victim is chosen and the caller
    /// waits for that one, as the kernel does.
    func handle(trigger: String) -> OOMOutcome {
        guard inProgress.withLock({ busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }) else { return .waitingForVictim(victim: "(another OOM kill in progress)") }
        defer { inProgress.withLock { $0 = false } }

        let now = ContinuousClock.now
        var skip = Set<ObjectIdentifier>()
        for g in all {
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
        for g in all where !skip.contains(ObjectIdentifier(g)) && g.ownUsage > 0 {
            guard let s = score(g) else { continue }
            if best == nil || s > best!.score { best = (g, s) }
        }
        guard let (victim, score) = best else { return .noVictim }
        victim.victim.withLock { $0 = MemoryGroup.VictimState(killedAt: now, usageAtKill: victim.ownUsage) }
        events.emit(.oomKill(OOMKill(victim: victim.name, score: score, usage: victim.usage,
                                     oomScoreAdjust: victim.oomScoreAdjust, trigger: trigger)))
        victim.onOOMKill(victim)
        return .killed(victim: victim.name)
    }
}

// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Synchronization

/// Per-shrinker statistics (vmstat / slabinfo-like lines).
public struct ShrinkerStatistics: Sendable, Hashable {
    /// The shrinker's name.
    public var name: String
    /// Its reclaim domain's name (`-`: none).
    public var domain: String
    /// Objects the shrinker was asked to scan, in total.
    public var scanned: Int
    /// Objects it reported freed.
    public var freed: Int
    /// Work carried over to the next pass (`nr_deferred`).
    public var deferred: Int
    /// Times a pass skipped it because the request excluded its domain.
    public var skippedForDomain: Int
    /// Times it answered `.stop`.
    public var stops: Int
}

/// The registered shrinkers of one system and the kernel's scan arithmetic.
/// Kernel analogue: `mm/shrinker.c` (`do_shrink_slab`).
final class ShrinkerRegistry: Sendable {
    /// Objects per `scanObjects` call. Kernel: `SHRINK_BATCH`.
    static let batch = 128
    /// The first (lightest) priority. Kernel: `DEF_PRIORITY`.
    static let initialPriority = 12

    final class Entry: @unchecked Sendable {  // mutable fields only under the registry lock
        let id: Int
        let shrinker: any Shrinker
        var deferred = 0
        /// Work carried over per group, for group-aware shrinkers (the kernel's per-memcg `nr_deferred`).
        var deferredByGroup: [UInt32: Int] = [:]
        var scanned = 0, freed = 0, skipped = 0, stops = 0
        var unregistered = false
        /// A call of it missed the deadline and is still running on a helper.
        var overdue = false
        /// Calls started and the last one that finished (tells a late finish from a hang).
        var callsStarted = 0, lastFinishedCall = 0
        /// It was reported as slow already.
        var reportedSlow = false
        /// Threads inside this shrinker's callbacks (their thread serials).
        var activeThreads: [UInt64] = []
        init(id: Int, shrinker: any Shrinker) { self.id = id; self.shrinker = shrinker }
    }

    private let entries = Locked<(list: [Entry], nextID: Int)>(([], 1))
    let checker: ReclaimRecursionChecker
    let events: EventHub
    /// How long reclaim waits for one shrinker call.
    let deadline: Duration
    /// The helper threads shrinker calls run on, so that none can hold
    /// reclaim up for longer than `deadline`.
    let runner: DeadlineRunner

    init(checker: ReclaimRecursionChecker, events: EventHub, deadline: Duration = .milliseconds(100),
         afterShrink: @escaping @Sendable () -> Void = {}) {
        self.checker = checker
        self.events = events
        self.deadline = deadline
        runner = DeadlineRunner(afterJob: afterShrink)
    }

    func register(_ shrinker: any Shrinker) -> ShrinkerRegistration {
        let id = entries.withLock { state -> Int in
            let id = state.nextID
            state.nextID += 1
            state.list.append(Entry(id: id, shrinker: shrinker))
            return id
        }
        return ShrinkerRegistration(registry: self, id: id)
    }

    func unregister(_ id: Int) {
        let me = currentThreadSerial()
        guard let entry = entries.withLock({ state -> Entry? in
            guard let i = state.list.firstIndex(where: { $0.id == id }) else { return nil }
            let entry = state.list.remove(at: i)
            entry.unregistered = true
            return entry
        }) else { return }
        // Wait for scans running on other threads (not our own: a shrinker may unregister itself).
        while entries.withLock({ _ in entry.activeThreads.contains { $0 != me } }) {
            sched_yield()
        }
    }

    /// In a forked child: threads of the parent that were inside shrinker
    /// callbacks do not exist here.
    func resetAfterFork() {
        entries.withLock { state in
            for entry in state.list { entry.activeThreads.removeAll() }
        }
    }

    var isEmpty: Bool { entries.withLock { $0.list.isEmpty } }

    func statistics() -> [ShrinkerStatistics] {
        entries.withLock { state in
            state.list.map {
                ShrinkerStatistics(name: $0.shrinker.name, domain: $0.shrinker.domain?.name ?? "-", scanned: $0.scanned,
                                   freed: $0.freed, deferred: $0.deferred, skippedForDomain: $0.skipped, stops: $0.stops)
            }
        }
    }

    /// One pass over every shrinker the request may call, at `priority`:
    /// group-aware shrinkers once per group of `scope`, the others once if
    /// the scope includes them. Returns the objects freed.
    /// Kernel analogue: `shrink_slab` (with `shrink_slab_memcg` per memcg).
    func shrink(priority: Int, context: AllocationContext?, scope: ReclaimScope = .everything) -> Int {
        let snapshot = entries.withLock { $0.list }
        var freedTotal = 0
        for entry in snapshot {
            let shrinker = entry.shrinker
            let groupAware = shrinker.isGroupAware
            if groupAware ? scope.groups.isEmpty : !scope.includesUnaware { continue }
            let domain = shrinker.domain
            if let context, !context.mayReclaim(in: domain) {
                entries.withLock { _ in entry.skipped += 1 }
                continue
            }
            // A shrinker that needs a lock this thread holds would deadlock: skip it, report.
            if let domain, checker.threadHoldsLock(takenByReclaimIn: domain, shrinker: shrinker.name, context: context, events: events) {
                entries.withLock { _ in entry.skipped += 1 }
                continue
            }
            // On a thread holding checked locks, a shrinker that missed its deadline here
            // before probably needs one of them: skip it.
            let holdsCheckedLocks = cmm_thread_slots_get().pointee.heldCheckedLocks > 0
            if holdsCheckedLocks && checker.isSuspected(shrinker.name) {
                entries.withLock { _ in entry.skipped += 1 }
                continue
            }
            // A call still running past its deadline: do not pile up another one.
            if entries.withLock({ _ in entry.overdue }) {
                entries.withLock { _ in entry.skipped += 1 }
                continue
            }
            // Every call runs on a helper thread and is waited for at most the deadline.
            let call = entries.withLock { _ -> Int in entry.callsStarted += 1; return entry.callsStarted }
            let result = runner.run(deadline: deadline) { [self] in
                var freed = 0
                if groupAware {
                    for group in scope.groups {
                        let n = shrinkOne(entry, priority: priority, context: context, group: group)
                        // R10: taking from a group below its effective low is counted on it.
                        if n > 0 && scope.lowProtected.contains(group.id) { group.count(.low) }
                        freed += n
                    }
                } else {
                    freed = shrinkOne(entry, priority: priority, context: context, group: context?.group)
                }
                entries.withLock { _ in
                    entry.lastFinishedCall = call
                    entry.overdue = false
                }
                return freed
            }
            if let freed = result {
                freedTotal += freed
                continue
            }
            let firstReport = entries.withLock { _ -> Bool in
                if entry.lastFinishedCall != call { entry.overdue = true }
                entry.stops += 1
                defer { entry.reportedSlow = true }
                return !entry.reportedSlow
            }
            if holdsCheckedLocks {
                checker.reportPossibleSelfDeadlock(shrinker: shrinker.name, domain: domain, context: context,
                                                  waited: deadline, events: events)
            } else if firstReport {
                events.emit(.slowShrinker(SlowShrinker(shrinker: shrinker.name, deadline: deadline,
                                                       allocationSite: context?.site)))
            }
        }
        return freedTotal
    }

    /// Counts and scans one shrinker at `priority` on the calling thread
    /// (inside `.reclaiming`); returns the objects freed.
    private func shrinkOne(_ entry: Entry, priority: Int, context: AllocationContext?, group: MemoryGroup?) -> Int {
        let me = currentThreadSerial()
        let shrinker = entry.shrinker
        let domain = shrinker.domain
        let token = AllocationScope.enter(.reclaiming)
        defer { token.exit() }
        guard entries.withLock({ _ -> Bool in
            guard !entry.unregistered else { return false }
            entry.activeThreads.append(me)
            return true
        }) else { return 0 }
        defer {
            entries.withLock { _ in
                if let i = entry.activeThreads.firstIndex(of: me) { entry.activeThreads.remove(at: i) }
            }
        }
        let control = ShrinkControl(objectsToScan: 0, priority: priority, context: context, group: group)
        let perGroup = shrinker.isGroupAware ? group?.id : nil
        let freeable = checker.runningShrinker(named: shrinker.name, domain: domain) {
            shrinker.countObjects(control)
        }
        guard freeable > 0 else { return 0 }
        // delta = (freeable >> priority) * 4 / seeks; seeks 0: half of it.
        let seeks = shrinker.seeks
        var delta = seeks == 0 ? freeable / 2 : (freeable >> priority) * 4 / seeks
        if delta == 0 && priority == 0 { delta = freeable }
        var total = entries.withLock { _ in
            let deferred = perGroup.map { entry.deferredByGroup[$0] ?? 0 } ?? entry.deferred
            if let perGroup { entry.deferredByGroup[perGroup] = nil } else { entry.deferred = 0 }
            return min(deferred + delta, 2 * freeable)
        }
        var freed = 0, scanned = 0, stopped = false
        while total >= ShrinkerRegistry.batch || (total > 0 && total >= freeable) {
            let n = min(ShrinkerRegistry.batch, total)
            var c = control
            c.objectsToScan = n
            let result = checker.runningShrinker(named: shrinker.name, domain: domain) { shrinker.scanObjects(c) }
            if case .freed(let f) = result {
                freed += f
                scanned += n
                total -= n
            } else {
                stopped = true
                break
            }
            if entries.withLock({ _ in entry.unregistered }) { break }
        }
        let remaining = total
        entries.withLock { _ in
            if let perGroup {
                let carried = min(remaining, 2 * freeable)
                entry.deferredByGroup[perGroup] = carried > 0 ? carried : nil
            } else {
                entry.deferred = min(entry.deferred + remaining, 2 * freeable)
            }
            entry.scanned += scanned
            entry.freed += freed
            if stopped { entry.stops += 1 }
        }
        return freed
    }
}

/// A process-unique number for the calling thread.
func currentThreadSerial() -> UInt64 {
    ThreadScopeState.currentOrCreate().pointee.serial
}

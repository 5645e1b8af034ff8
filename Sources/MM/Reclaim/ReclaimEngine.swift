// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Counters of reclaim and the OOM handler (`MemoryStatistics.reclaim`).
/// Kernel analogue: the `pgsteal`/`kswapd` and `oom_kill` lines of `/proc/vmstat`.
public struct ReclaimCounters: Sendable, Hashable {
    /// Direct reclaim passes and the pages they returned (`direct_reclaim_runs`, `direct_reclaim_pages`).
    public var directRuns = 0, directPages = 0
    /// Background passes and the pages they returned (`background_reclaim_runs`, `background_reclaim_pages`).
    public var backgroundRuns = 0, backgroundPages = 0
    /// Wake-ups of the background reclaimer (`background_wakeups`).
    public var backgroundWakeups = 0
    /// OOM kills, waits for an earlier victim, and OOM steps that found no victim
    /// (`oom_kill`, `oom_victim_wait`, `oom_no_victim`).
    public var oomKills = 0, oomVictimWaits = 0, oomNoVictim = 0
    /// Reclaim passes for a group's limit and the bytes they uncharged
    /// (`group_reclaim_runs`, `group_reclaim_bytes`). Kernel: `try_to_free_mem_cgroup_pages`.
    public var groupRuns = 0, groupBytes = 0
}

/// Reclaim passes: shrinkers by decreasing priority, per-thread lists
/// drained, progress measured in pages returned to the buddy allocator.
/// Kernel analogue: `mm/vmscan.c` (`do_try_to_free_pages`, `balance_pgdat`).
final class ReclaimEngine: Sendable {
    let pages: PageAllocator
    let shrinkers: ShrinkerRegistry
    let oom: OOMKiller
    let pressure: PressureTracker
    let counters = Locked(ReclaimCounters())
    /// The object layer: empty slabs and cached objects go back to the self.pages.
    let slab: SlabAllocator
    /// Pages a direct reclaim pass aims to free beyond the request itself.
    /// Kernel analogue: `SWAP_CLUSTER_MAX`.
    static let clusterPages = 32

    /// What happens when no victim is left.
    let oomPolicy: OOMPolicy

    init(pages: PageAllocator, slab: SlabAllocator, shrinkers: ShrinkerRegistry, oom: OOMKiller,
         pressure: PressureTracker, oomPolicy: OOMPolicy) {
        self.pages = pages
        self.oomPolicy = oomPolicy
        self.slab = slab
        self.shrinkers = shrinkers
        self.oom = oom
        self.pressure = pressure
    }

    private var buddyFree: Int { self.pages.freePagesHot.pointee.load(ordering: .relaxed) }

    /// One pass of the shrinkers at `priority`, then the slab layer: the
    /// objects they freed (into this thread's magazines) and slabs left empty
    /// go back to the page allocator, and what reached this thread's page
    /// lists goes straight back to the buddy allocator.
    private func shrinkOnce(priority: Int, context: AllocationContext?, scope: ReclaimScope) {
        _ = shrinkers.shrink(priority: priority, context: context, scope: scope)
        _ = slab.reclaim()
        self.pages.drainCallingThread()
    }

    /// The scope of global reclaim (R10): group-aware shrinkers for every
    /// group except those at or below their effective `min`, and below
    /// their effective `low` only when `includingLow`; also whether some
    /// group was left out for its `low`.
    func globalScope(includingLow: Bool) -> (scope: ReclaimScope, skippedLow: Bool) {
        let all = oom.all
        let protection = GroupProtection(groups: all)
        var scope = ReclaimScope(groups: [], includesUnaware: true)
        var skippedLow = false
        for g in all {
            switch protection.protection(of: g) {
            case .min: continue
            case .low:
                guard includingLow else { skippedLow = true; continue }
                scope.lowProtected.insert(g.id)
                scope.groups.append(g)
            case .none: scope.groups.append(g)
            }
        }
        return (scope, skippedLow)
    }

    /// Runs passes from the lightest priority down while `more()` holds,
    /// over the unprotected groups first; if that freed nothing and a group
    /// was spared for its `low`, again with those groups (R10: `low` gives
    /// way only when nothing unprotected is reclaimable).
    private func globalPasses(context: AllocationContext?, while more: () -> Bool) {
        let start = buddyFree
        let (scope, skippedLow) = globalScope(includingLow: false)
        var priority = ShrinkerRegistry.initialPriority
        while priority >= 0 && more() {
            shrinkOnce(priority: priority, context: context, scope: scope)
            priority -= 1
        }
        guard skippedLow && buddyFree <= start && more() else { return }
        let (withLow, _) = globalScope(includingLow: true)
        priority = ShrinkerRegistry.initialPriority
        while priority >= 0 && more() {
            shrinkOnce(priority: priority, context: context, scope: withLow)
            priority -= 1
        }
    }

    /// Reclaim for a group's limit (R8, R9): group-aware shrinkers for the
    /// groups of `root`'s subtree (descendants protected by their `min`, and
    /// by their `low` while anything else is reclaimable), then the other
    /// shrinkers, until `bytes` were uncharged from `root` or nothing more
    /// can be freed. Returns the bytes uncharged.
    /// Kernel analogue: `try_to_free_mem_cgroup_pages`.
    func reclaimGroup(_ root: MemoryGroup, context: AllocationContext?, bytes: Int) -> Int {
        let before = root.usage
        let target = before - Swift.max(bytes, ReclaimEngine.clusterPages << pageShift)
        let all = oom.all
        let protection = GroupProtection(groups: all)
        var aware = ReclaimScope(groups: [], includesUnaware: false)
        var lowOnes: [MemoryGroup] = []
        for g in all where g.isWithin(root) {
            switch g === root ? .none : protection.protection(of: g) {
            case .min: continue
            case .low: lowOnes.append(g)
            case .none: aware.groups.append(g)
            }
        }
        let unaware = ReclaimScope(groups: [], includesUnaware: true)
        var passes = [aware, unaware]
        if !lowOnes.isEmpty {
            passes.append(ReclaimScope(groups: lowOnes, includesUnaware: false, lowProtected: Set(lowOnes.map(\.id))))
        }
        // Charges are per object: only shrinkers uncharge. Emptied slabs and cached
        // blocks go back to the page allocator once, at the end.
        if !shrinkers.isEmpty {
            for scope in passes {
                var priority = ShrinkerRegistry.initialPriority
                while priority >= 0 && root.usage > target {
                    _ = shrinkers.shrink(priority: priority, context: context, scope: scope)
                    priority -= 1
                }
                if root.usage <= target { break }
            }
            _ = slab.reclaim()
            self.pages.drainCallingThread()
        }
        let uncharged = Swift.max(0, before - root.usage)
        counters.withLock { $0.groupRuns += 1; $0.groupBytes += uncharged }
        return uncharged
    }

    /// Direct reclaim for a request of `order` (already running as
    /// `.reclaiming`): returns the pages it gave back.
    func directReclaim(_ context: AllocationContext, order: Int) -> Int {
        let before = buddyFree
        // Enough to satisfy the request at its tier, and at least a cluster.
        let floor = context.tier.floor(min: self.pages.watermarks.min)
        let target = max((1 << order) + ReclaimEngine.clusterPages, floor + (1 << order) + 1 - before)
        _ = self.pages.drainForReclaim()
        _ = slab.reclaim()
        globalPasses(context: context) { buddyFree - before < target }
        let gained = max(0, buddyFree - before)
        counters.withLock { $0.directRuns += 1; $0.directPages += gained }
        return gained
    }

    /// One background pass: unrestricted, until free memory is above `high`
    /// (or nothing more can be freed). Returns the pages gained.
    func backgroundPass() -> Int {
        let before = buddyFree
        _ = self.pages.drainForReclaim()
        _ = slab.reclaim()
        globalPasses(context: nil) { buddyFree <= self.pages.watermarks.high }
        let gained = max(0, buddyFree - before)
        counters.withLock { $0.backgroundRuns += 1; $0.backgroundPages += gained }
        return gained
    }

    /// Reclaims until `pages` were gained or a full pass made no progress.
    func proactive(pages: Int) -> Int {
        let before = buddyFree
        _ = self.pages.drainForReclaim()
        _ = slab.reclaim()
        var fruitless = 0
        while buddyFree - before < pages && fruitless < 2 {
            let start = buddyFree
            globalPasses(context: nil) { buddyFree - before < pages }
            fruitless = buddyFree > start ? 0 : fruitless + 1
        }
        return max(0, buddyFree - before)
    }

    /// Reported that the process limit cannot be reached (once per limit).
    let limitReported = Atomic<Bool>(false)

    /// Usage is above the process limit and reclaim made no progress (R11):
    /// the OOM handler, as for waiters; with no victim left, one
    /// `overLimit` report per limit change (the requests themselves fail or
    /// wait at the watermarks as usual).
    func enforceLimit() {
        guard case .noVictim = oom.handle(trigger: "background reclaimer: usage above the process limit") else {
            counters.withLock { $0.oomKills += 1 }
            return
        }
        counters.withLock { $0.oomNoVictim += 1 }
        guard !limitReported.exchange(true, ordering: .relaxed) else { return }
        let s = pages.pageStatistics()
        let limit = pages.limitPages.load(ordering: .relaxed) << pageShift
        let used = (pages.arena.pageCount - s.buddyFreePages - s.cachedPages) << pageShift
        pages.events.emit(.overLimit(OverLimit(limit: limit, usage: used)))
    }

    /// The OOM step for a request or for the background reclaimer. With no
    /// victim left, `OOMPolicy.abort` stops the process with a full report.
    func outOfMemory(trigger: String, within group: MemoryGroup? = nil) -> OOMOutcome {
        let outcome = oom.handle(trigger: trigger, within: group)
        // With no victim in a group's subtree the charge fails (R8); only global OOM aborts.
        if case .noVictim = outcome, group == nil { noVictimLeft(trigger: trigger) }
        counters.withLock { c in
            switch outcome {
            case .killed: c.oomKills += 1
            case .waitingForVictim: c.oomVictimWaits += 1
            case .noVictim: c.oomNoVictim += 1
            }
        }
        return outcome
    }

    /// The OOM handler found no victim: `OOMPolicy.abort` stops the process
    /// with a full report; `.failRequests` lets the caller fail (guaranteed
    /// requests keep waiting and reporting stalls).
    private func noVictimLeft(trigger: String) {
        guard oomPolicy == .abort else { return }
        let s = self.pages.pageStatistics()
        let groups = oom.all.map { "  \($0.name): usage \($0.usage >> 10) kB, oom_score_adj \($0.oomScoreAdjust)" }
        fatalError("""
            swift-mm: out of memory and no OOM victim left (OOMPolicy.abort)
            trigger: \(trigger)
            free pages \(s.buddyFreePages + s.cachedPages), min \(self.pages.watermarks.min), low \(self.pages.watermarks.low), high \(self.pages.watermarks.high)
            free blocks per order: \(s.freeBlocks)
            groups:
            \(groups.isEmpty ? "  (none)" : groups.joined(separator: "\n"))
            """)
    }
}

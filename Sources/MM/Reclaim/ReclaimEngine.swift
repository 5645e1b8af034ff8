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
    private func shrinkOnce(priority: Int, context: AllocationContext?) {
        _ = shrinkers.shrink(priority: priority, context: context)
        _ = slab.reclaim()
        self.pages.drainCallingThread()
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
        var priority = ShrinkerRegistry.initialPriority
        while priority >= 0 && buddyFree - before < target {
            shrinkOnce(priority: priority, context: context)
            priority -= 1
        }
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
        var priority = ShrinkerRegistry.initialPriority
        while priority >= 0 && buddyFree <= self.pages.watermarks.high {
            shrinkOnce(priority: priority, context: nil)
            priority -= 1
        }
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
            var priority = ShrinkerRegistry.initialPriority
            while priority >= 0 && buddyFree - before < pages {
                shrinkOnce(priority: priority, context: nil)
                priority -= 1
            }
            fruitless = buddyFree > start ? 0 : fruitless + 1
        }
        return max(0, buddyFree - before)
    }

    /// The OOM step for a request or for the background reclaimer. With no
    /// victim left, `OOMPolicy.abort` stops the process with a full report.
    func outOfMemory(trigger: String) -> OOMOutcome {
        let outcome = oom.handle(trigger: trigger)
        if case .noVictim = outcome { noVictimLeft(trigger: trigger) }
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

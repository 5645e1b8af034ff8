// SPDX-License-Identifier: Apache-2.0
import Glibc

extension SlowPath {
    /// The charge step of a request charged to `group`, before its first
    /// attempt: rules R8 (`max`) and R9 (`high`). Returns false when the
    /// request fails at a `max` (reported); true when `bytes` are charged
    /// to `group` and its ancestors.
    ///
    /// At a `max`: non-blocking requests fail at once; requests inside
    /// reclaim force-charge (the kernel's PF_MEMALLOC); the others reclaim
    /// from the subtree at its limit while that makes progress, then invoke
    /// the OOM handler for that subtree if R6 allows, then fail (fallible),
    /// wait reporting stalls that name the group (`.retryForever`) or
    /// force-charge (`.useReserves`, the kernel's `__GFP_NOFAIL`).
    /// Kernel analogue: `try_charge_memcg`, `mem_cgroup_handle_over_high`.
    func charge(_ bytes: Int, to group: MemoryGroup, _ context: AllocationContext) -> Bool {
        guard var over = group.tryCharge(bytes) else {
            throttleOverHigh(group, context)
            return true
        }
        over.count(.max)
        if context.reclaiming {
            forceCharge(bytes, to: group)
            return true
        }
        guard context.blocking else {
            over.count(.oom)
            return failAtMax(over, context, reason: "non-blocking request at the max of group \(over.name) (\(describe(over)))")
        }
        observers.stallBegan()
        defer { observers.stallEnded() }
        let clock = ContinuousClock()
        let start = clock.now
        var nextStallReport = start + settings.stallReportInterval
        var rounds = 0, roundsWithoutProgress = 0, oomRounds = 0, attempts = 1
        var backoff = Duration.milliseconds(1)
        while true {
            let before = over.usage
            if context.directReclaim {
                let reclaim = hooks.withLock { $0.groupReclaim }
                let token = AllocationScope.enter(.reclaiming)
                _ = reclaim(context, over, bytes)
                token.exit()
            } else {
                // Restricted (no direct reclaim): wait for frees in the group.
                sleep(for: backoff)
                backoff = min(backoff * 2, .milliseconds(100))
            }
            attempts += 1
            guard let next = group.tryCharge(bytes) else {
                throttleOverHigh(group, context)
                return true
            }
            let progress = next.usage < before || next !== over
            over = next
            over.count(.max)
            rounds += 1
            roundsWithoutProgress = progress ? 0 : roundsWithoutProgress + 1
            let exhausted = context.directReclaim
                ? roundsWithoutProgress > 0 || rounds >= settings.maxReclaimRetries
                : roundsWithoutProgress >= settings.maxReclaimRetries
            guard exhausted else { continue }
            if context.guarantee == nil && context.persistence == .failFast {
                over.count(.oom)
                return failAtMax(over, context, reason: "group \(over.name) at its max (\(describe(over))) after one reclaim round (failFast)")
            }
            // The OOM handler for the subtree at its limit (R6 as for global OOM).
            let oomAllowed = context.mayInvokeOOM && (context.guarantee == .useReserves
                                                      || (context.guarantee == nil && context.persistence == .standard))
            if oomAllowed && oomRounds < settings.maxReclaimRetries {
                over.count(.oom)
                counters.withLock { $0.oomInvocations += 1 }
                let handler = hooks.withLock { $0.groupOutOfMemory }
                switch handler(context, over) {
                case .killed, .waitingForVictim:
                    // Wait for the victim's memory (at most the reap timeout), then charge
                    // again; a victim that does not release is skipped at the next OOM step.
                    oomRounds += 1
                    _ = waitForUncharge(over, from: over.usage, context)
                    rounds = 0
                    roundsWithoutProgress = 0
                    continue
                case .noVictim:
                    oomRounds = settings.maxReclaimRetries  // nobody left to kill in this subtree
                }
            }
            switch context.guarantee {
            case nil:
                if !oomAllowed { over.count(.oom) }
                return failAtMax(over, context, reason: "group \(over.name) at its max (\(describe(over))): reclaim made no progress after \(rounds) round(s)")
            case .useReserves?:
                // The kernel's NOFAIL force-charge: past max, counted (max counted above).
                forceCharge(bytes, to: group)
                return true
            case .retryForever?:
                let now = clock.now
                if now >= nextStallReport {
                    counters.withLock { $0.stallReports += 1 }
                    pages.events.emit(.allocationStall(AllocationStall(
                        request: context.request, policy: context.policy.description, scope: context.scope.description,
                        guarantee: context.guarantee, site: context.site, attempts: attempts, stalledFor: now - start,
                        group: over.name, groupDetail: describe(over))))
                    nextStallReport = now + settings.stallReportInterval
                }
                // Wait for the group's usage to fall; reclaim again after it.
                _ = waitForUncharge(over, from: over.usage, context, timeout: backoff)
                backoff = min(backoff * 2, .milliseconds(100))
                roundsWithoutProgress = 0
                rounds = 0
            }
        }
    }

    /// Charges past every limit, counted (`max_force_charge`).
    private func forceCharge(_ bytes: Int, to group: MemoryGroup) {
        group.charge(bytes)
        counters.withLock { $0.maxForceCharges += 1 }
    }

    private func failAtMax(_ over: MemoryGroup, _ context: AllocationContext, reason: String) -> Bool {
        counters.withLock { $0.maxFailures += 1 }
        _ = fail(context, reason: reason)
        return false
    }

    /// `usage 12 MiB of max 12 MiB`, for reports.
    func describe(_ group: MemoryGroup) -> String {
        let limits = group.limits
        return "usage \(group.usage >> 10) kB of max \(limits.max.map { "\($0 >> 10) kB" } ?? "none")"
    }

    /// Waits until `group`'s usage falls below `usage` or `timeout` (default:
    /// the OOM reap timeout) passes; true if it fell.
    private func waitForUncharge(_ group: MemoryGroup, from usage: Int, _ context: AllocationContext,
                                 timeout: Duration? = nil) -> Bool {
        let deadline = ContinuousClock.now + (timeout ?? settings.oomReapTimeout)
        var step = Duration.milliseconds(1)
        while ContinuousClock.now < deadline {
            if group.usage < usage { return true }
            sleep(for: min(step, deadline - ContinuousClock.now))
            step = min(step * 2, .milliseconds(20))
        }
        return group.usage < usage
    }

    /// R9: a blocking request that left a group above its `high` reclaims
    /// from that group and then sleeps in proportion to what is still over
    /// (`overage / high × 10 s`, at most 2 s: 1 % over costs 100 ms). Never
    /// fails, never invokes the OOM handler. Non-blocking requests and
    /// requests inside reclaim are not throttled.
    /// Kernel analogue: `mem_cgroup_handle_over_high` (`MEMCG_MAX_HIGH_DELAY_JIFFIES` = 2 s).
    func throttleOverHigh(_ group: MemoryGroup, _ context: AllocationContext) {
        guard context.blocking && !context.reclaiming, let (over, overage) = group.highestOverage else { return }
        over.count(.high)
        if context.directReclaim {
            let reclaim = hooks.withLock { $0.groupReclaim }
            let token = AllocationScope.enter(.reclaiming)
            _ = reclaim(context, over, overage)
            token.exit()
        }
        let high = over.limitWords.high.load(ordering: .relaxed)
        let remaining = over.usage - high
        var milliseconds = 0
        if remaining > 0 {
            milliseconds = high == 0 ? 2000 : Int(min(2000, Double(remaining) / Double(high) * 10_000))
            if milliseconds > 0 {
                observers.stallBegan()
                sleep(for: .milliseconds(milliseconds))
                observers.stallEnded()
            }
        }
        counters.withLock { $0.highThrottles += 1; $0.highThrottleMilliseconds += milliseconds }
    }

    private func sleep(for duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var remaining = timespec(tv_sec: Int(max(0, seconds)), tv_nsec: Int(max(0, attoseconds) / 1_000_000_000))
        while true {
            let request = remaining
            guard withUnsafePointer(to: request, { nanosleep($0, &remaining) }) != 0 && errno == EINTR else { return }
        }
    }
}

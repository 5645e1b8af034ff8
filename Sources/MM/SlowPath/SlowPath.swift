// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Synchronization

/// What the OOM handler did for a request.
enum OOMOutcome: Sendable {
    /// A victim was told to release memory.
    case killed(victim: String)
    /// An earlier victim is still releasing its memory (or another thread is
    /// choosing one): nobody new was killed, the caller waits for that memory.
    /// Kernel analogue: `out_of_memory()` returning true without a kill when
    /// a victim is already exiting (`task_will_free_mem`, `oom_lock` held).
    case waitingForVictim(victim: String)
    /// No victim could be chosen.
    case noVictim
}

/// The seam between the slow path and the reclaim and OOM boxes, wired by
/// `MemorySystem`: direct reclaim returns the pages it gave back to the
/// buddy allocator; the OOM handler picks and notifies a victim. Until they
/// are wired, direct reclaim drains the per-thread lists and there is no
/// victim.
struct ReclaimHooks: Sendable {
    var directReclaim: @Sendable (_ context: AllocationContext, _ order: Int) -> Int
    var outOfMemory: @Sendable (_ context: AllocationContext) -> OOMOutcome
    /// Whether a victim told to release memory still holds some (a request
    /// waiting after a kill stops waiting once this is false).
    var victimReleasing: @Sendable () -> Bool = { true }
    /// Reclaim for a group's limit (R8, R9): returns the bytes uncharged from the group.
    var groupReclaim: @Sendable (_ context: AllocationContext, _ group: MemoryGroup, _ bytes: Int) -> Int = { _, _, _ in 0 }
    /// The OOM handler restricted to a group's subtree (R8).
    var groupOutOfMemory: @Sendable (_ context: AllocationContext, _ group: MemoryGroup) -> OOMOutcome = { _, _ in .noVictim }
}

/// What the slow path tells the diagnostics boxes, wired once by
/// `MemorySystem`: stalls (pressure), fault injection, allocation profiling.
struct SlowPathObservers: Sendable {
    /// A request starts or stops waiting for memory (PSI).
    var stallBegan: @Sendable () -> Void = {}
    var stallEnded: @Sendable () -> Void = {}
    /// Whether a fallible request fails on purpose (fault injection).
    var injectFailure: @Sendable (_ byteCount: Int, _ site: CallSite?, _ cache: String?) -> Bool = { _, _, _ in false }
    /// Sees every successful request (allocation profiling); nil when off.
    var recordAllocation: (@Sendable (_ pointer: UnsafeMutableRawPointer, _ bytes: Int, _ site: CallSite?) -> Void)?
}

/// The slow path's part of the configuration.
struct SlowPathSettings: Sendable {
    /// Reclaim rounds without success before a fallible request gives up (steps 7, 8).
    var maxReclaimRetries: Int
    /// Between two stall reports of one waiting request (step 9).
    var stallReportInterval: Duration
    /// How long a request waits for an OOM victim's memory (step 8).
    var oomReapTimeout: Duration
}

/// Counters of the slow path (`MemoryStatistics.slowPath`).
/// Kernel analogue: the allocation-stall lines of `/proc/vmstat`.
public struct SlowPathCounters: Sendable, Hashable {
    /// Direct reclaim entries (`allocstall`).
    public var allocstall = 0
    /// Pages direct reclaim gave back, as the slow path saw them.
    public var directReclaimPages = 0
    /// "Possible memory allocation deadlock" reports (`stall_reports`).
    public var stallReports = 0
    /// Call sites whose guarantee overrode a scope (`scope_conflicts`).
    public var scopeConflicts = 0
    /// Requests that invoked the OOM handler (`oom_invocations`).
    public var oomInvocations = 0
    /// Waits for a victim's memory that ran into `oomReapTimeout` (`oom_reap_timeouts`).
    public var oomReapTimeouts = 0
    /// Requests failed by fault injection (`fault_injected`).
    public var faultsInjected = 0
    /// Guaranteed requests that had to wait (`guaranteed_waits`).
    public var guaranteedWaits = 0
    /// `.useReserves` requests that went to the `.high` tier (`reserve_unlocks`).
    public var reserveUnlocks = 0
    /// Charges let past a group's `max`: `.useReserves` and requests inside
    /// reclaim (`max_force_charge`; kernel: the NOFAIL and PF_MEMALLOC force-charge).
    public var maxForceCharges = 0
    /// Requests failed at a group's `max` (`max_fail`).
    public var maxFailures = 0
    /// Requests throttled above a group's `high`, and the milliseconds they slept
    /// (`high_throttle`, `high_throttle_ms`; kernel: `mem_cgroup_handle_over_high`).
    public var highThrottles = 0, highThrottleMilliseconds = 0
    /// Failed requests by what they were allowed to do (`fail_nonblocking`, `fail_failfast`,
    /// `fail_retry_while_progress`, `fail_standard`).
    public var failNonBlocking = 0, failFailFast = 0, failRetryWhileProgress = 0, failStandard = 0
}

/// The allocation slow path, steps 1–10 of the design ("Slow path, in
/// order"), for every request the fast paths did not serve: it admits the
/// request (context, conflicts, fault injection), asks the router once
/// where the memory comes from, and then makes non-blocking attempts at
/// that route, reclaiming, waiting and invoking the OOM handler between
/// them as the context allows. It is the only box that blocks.
/// Kernel analogue: `__alloc_pages_slowpath`.
@usableFromInline
final class SlowPath: Sendable {
    let router: PlacementRouter
    let pages: PageAllocator
    let settings: SlowPathSettings
    let hooks: Locked<ReclaimHooks>
    let observers: SlowPathObservers
    let counters = Locked(SlowPathCounters())
    let failureReports = ReportRateLimiter()
    let conflictSites = Locked<Set<CallSite>>([])

    init(router: PlacementRouter, settings: SlowPathSettings, observers: SlowPathObservers) {
        self.router = router
        self.pages = router.pages
        self.settings = settings
        self.observers = observers
        hooks = Locked(ReclaimHooks(
            directReclaim: { [pages = router.pages] _, _ in pages.drainForReclaim() },
            outOfMemory: { _ in .noVictim }))
    }

    // MARK: Steps 1-4

    /// Serves an admitted request on `route`: steps 1–4, then the retry loop.
    func serve(_ route: Route, _ context: AllocationContext) -> UnsafeMutableRawPointer? {
        var route = route
        if case .automatic(let order, let byteCount) = route {
            // kvmalloc: contiguous pages first, without reclaim, reserves or a failure
            // report (steps 1-3 at the ordinary tier), then virtual with the full context.
            if byteCount <= maxContiguousBytes, let p = quickAttempt(.pages(order: order), context) {
                return finish(p, .pages(order: order), context)
            }
            route = .virtual(byteCount: byteCount)
        }
        // 1. Above low.
        switch router.attempt(route, floor: pages.watermarks.low, chargedTo: context.group?.id ?? 0, site: context.site) {
        case .allocated(let p): return finish(p, route, context)
        case .unusable(let reason) where context.guarantee == nil: return fail(context, reason: reason)
        case .unusable, .noMemory: break
        }
        // 2. Below low: wake the background reclaimer.
        pages.wakeBackgroundReclaim()
        // 3. Down to the tier's floor.
        switch attempt(route, context.tier, context) {
        case .allocated(let p): return finish(p, route, context)
        case .failed(let reason): return fail(context, reason: reason)
        case .noMemory: break
        }
        // 4. Non-blocking: fail (R7: never sleeps, never reclaims).
        guard context.blocking else {
            return fail(context, reason: "non-blocking request below its \(context.tier) floor")
        }
        return retry(route, context)
    }

    /// Steps 1–3 at the ordinary tier, without a failure (kvmalloc's contiguous attempt).
    private func quickAttempt(_ route: Route, _ context: AllocationContext) -> UnsafeMutableRawPointer? {
        let id = context.group?.id ?? 0
        if case .allocated(let p) = router.attempt(route, floor: pages.watermarks.low, chargedTo: id, site: context.site) {
            return p
        }
        pages.wakeBackgroundReclaim()
        if case .allocated(let p) = router.attempt(route, floor: ReserveTier.none.floor(min: pages.watermarks.min),
                                                   chargedTo: id, site: context.site) {
            return p
        }
        return nil
    }

    /// What one attempt at a tier's floor came to.
    private enum Attempt {
        case allocated(UnsafeMutableRawPointer)
        case noMemory
        /// The request cannot be met now for a reason other than memory (a
        /// vmalloc mapping): a fallible request fails with it.
        case failed(String)
    }

    /// One attempt down to `tier`'s floor. A guaranteed request whose
    /// vmalloc mapping could not be made waits for mappings to be released
    /// (any free wakes it) and counts it as no memory.
    private func attempt(_ route: Route, _ tier: ReserveTier, _ context: AllocationContext) -> Attempt {
        let generation = pages.waitQueue.generation
        switch router.attempt(route, floor: tier.floor(min: pages.watermarks.min), chargedTo: context.group?.id ?? 0,
                              site: context.site) {
        case .allocated(let p): return .allocated(p)
        case .noMemory: return .noMemory
        case .unusable(let reason):
            guard context.guarantee != nil else { return .failed(reason) }
            pages.waitQueue.wait(since: generation, timeout: .milliseconds(10))
            return .noMemory
        }
    }

    /// Steps 5–10: reclaim or wait, retry, OOM, stall reports. The time spent
    /// here is an allocation stall (pressure).
    private func retry(_ route: Route, _ context: AllocationContext) -> UnsafeMutableRawPointer? {
        observers.stallBegan()
        defer { observers.stallEnded() }
        let maxRetries = settings.maxReclaimRetries
        let clock = ContinuousClock()
        let start = clock.now
        var nextStallReport = start + settings.stallReportInterval
        var tier = context.tier
        var attempts = 2, rounds = 0, roundsWithoutProgress = 0, oomRounds = 0
        // Waiting for the background reclaimer starts longer than backing off after a
        // fruitless direct reclaim: the reclaimer needs time to run a pass.
        var backoff = Duration.milliseconds(context.directReclaim ? 1 : 10)
        var reservesUnlocked = false
        if context.guarantee != nil { counters.withLock { $0.guaranteedWaits += 1 } }
        while true {
            let generation = pages.waitQueue.generation
            var progress = false
            if context.directReclaim {
                // 5. Direct reclaim, running as .reclaiming (domains respected by the reclaimer).
                progress = directReclaim(context, order: router.reclaimOrder(of: route)) > 0
            } else {
                // Restricted: wait for the background reclaimer (woken again) or any free.
                pages.wakeBackgroundReclaim()
                progress = pages.waitQueue.wait(since: generation, timeout: backoff)
                backoff = min(backoff * 2, .milliseconds(100))
            }
            attempts += 1
            switch attempt(route, tier, context) {
            case .allocated(let p): return finish(p, route, context)
            case .failed(let reason): return fail(context, reason: reason)
            case .noMemory: break
            }
            // The request's own group became an OOM victim meanwhile (another thread's
            // request chose it): it gets the victim's reserve, and a fallible request
            // fails now instead of waiting for memory that only its own caller can free.
            // Kernel analogue: the victim's ALLOC_OOM access, and "goto nopage" for a victim.
            if tier < .oomVictim, let group = context.group, group.isOOMVictim {
                tier = .oomVictim
                if case .allocated(let p) = attempt(route, tier, context) { return finish(p, route, context) }
                if context.guarantee == nil {
                    return fail(context, reason: "the request's group \(group.name) was chosen as OOM victim; its memory must be released first")
                }
            }
            rounds += 1
            roundsWithoutProgress = progress ? 0 : roundsWithoutProgress + 1
            // Direct reclaim that frees nothing is final; a restricted request gives up
            // only after maxReclaimRetries waits in a row in which nothing was freed.
            let exhausted = context.directReclaim
                ? roundsWithoutProgress > 0 || rounds >= maxRetries
                : roundsWithoutProgress >= maxRetries || rounds >= 4 * maxRetries
            switch context.guarantee {
            case nil:
                // 6. failFast: one round.
                if context.persistence == .failFast {
                    return fail(context, reason: "one reclaim round did not free enough (failFast)")
                }
                // 7./8. retryWhileProgress and standard: while reclaim makes progress, at most maxReclaimRetries.
                guard exhausted else { continue }
                if context.persistence == .standard && context.mayInvokeOOM {
                    switch outOfMemory(route, tier, context) {
                    case .allocated(let p): return finish(p, route, context)
                    case .victimReleased where oomRounds < maxRetries:
                        // The kernel's "OOM made progress: retry" (others took the memory first).
                        oomRounds += 1
                        rounds = 0
                        roundsWithoutProgress = 0
                        continue
                    case .victimReleased:
                        return fail(context, reason: "out of memory: \(oomRounds) OOM kills released memory that other requests took first")
                    case .victimIsSelf:
                        return fail(context, reason: "out of memory: the request's own group was chosen as OOM victim")
                    case .noVictim:
                        return fail(context, reason: "out of memory: reclaim made no progress and the OOM handler found no victim")
                    }
                }
                return fail(context, reason: roundsWithoutProgress > 0
                            ? "reclaim made no progress after \(rounds) round(s)"
                            : "no success after \(rounds) reclaim rounds")
            case .useReserves?:
                // 10. As 9, then the OOM handler (if R6 allows) and the .high tier.
                if exhausted && !reservesUnlocked {
                    reservesUnlocked = true
                    counters.withLock { $0.reserveUnlocks += 1 }
                    if context.mayInvokeOOM, case .allocated(let p) = outOfMemory(route, tier, context) {
                        return finish(p, route, context)
                    }
                    tier = max(tier, .high)
                    if case .allocated(let p) = attempt(route, tier, context) { return finish(p, route, context) }
                }
            case .retryForever?:
                // 9. Loop for ever: never the OOM handler, never reserves.
                break
            }
            let now = clock.now
            if now >= nextStallReport {
                reportStall(context, attempts: attempts, stalledFor: now - start)
                nextStallReport = now + settings.stallReportInterval
            }
            // Bounded back-off before the next round, cut short by any free.
            if context.directReclaim && !progress {
                pages.waitQueue.wait(since: generation, timeout: backoff)
                backoff = min(backoff * 2, .milliseconds(100))
            }
        }
    }

    // MARK: Steps

    private func directReclaim(_ context: AllocationContext, order: Int) -> Int {
        counters.withLock { $0.allocstall += 1 }
        let reclaim = hooks.withLock { $0.directReclaim }
        let token = AllocationScope.enter(.reclaiming)
        let freed = reclaim(context, order)
        token.exit()
        counters.withLock { $0.directReclaimPages += freed }
        return freed
    }

    /// Step 8/10: the OOM handler, then a wait for the victim's memory.
    private func outOfMemory(_ route: Route, _ tier: ReserveTier, _ context: AllocationContext) -> OOMStep {
        counters.withLock { $0.oomInvocations += 1 }
        let (handler, victimReleasing) = hooks.withLock { ($0.outOfMemory, $0.victimReleasing) }
        switch handler(context) {
        case .killed, .waitingForVictim:
            // Wait until the memory is there, or the victim has released what it had
            // (others may have taken it meanwhile: the caller reclaims and retries),
            // or the reap timeout passed.
            let deadline = ContinuousClock.now + settings.oomReapTimeout
            while true {
                // A request of the victim itself does not wait for its own memory: it may
                // use the victim's reserve, and otherwise its caller must release first.
                // Checked every round: another thread's OOM step may pick this request's
                // group while it waits ("another OOM kill in progress").
                if let group = context.group, group.isOOMVictim {
                    if case .allocated(let p) = attempt(route, max(tier, .oomVictim), context) { return .allocated(p) }
                    return .victimIsSelf
                }
                let generation = pages.waitQueue.generation
                if case .allocated(let p) = attempt(route, tier, context) { return .allocated(p) }
                if !victimReleasing() { break }
                if ContinuousClock.now >= deadline {
                    counters.withLock { $0.oomReapTimeouts += 1 }
                    break
                }
                pages.waitQueue.wait(since: generation, timeout: .milliseconds(10))
            }
            if case .allocated(let p) = attempt(route, tier, context) { return .allocated(p) }
            return .victimReleased
        case .noVictim:
            return .noVictim
        }
    }

    /// What the OOM step did for a request.
    private enum OOMStep {
        /// The request got its memory.
        case allocated(UnsafeMutableRawPointer)
        /// A victim released memory, but it went elsewhere: reclaim and retry.
        case victimReleased
        /// The request's own group is the victim: it must not wait for itself.
        case victimIsSelf
        /// No victim was left.
        case noVictim
    }

    /// A successful request: charged to its group, zeroed if asked, seen by the profiler.
    private func finish(_ p: UnsafeMutableRawPointer, _ route: Route, _ context: AllocationContext) -> UnsafeMutableRawPointer {
        let bytes = router.bytes(of: route)
        // The step that served it may hand out less than was charged up front (kvmalloc).
        if let group = context.group, bytes != context.chargedBytes { group.charge(bytes - context.chargedBytes) }
        if context.policy.zeroed {
            switch route {
            case .virtual, .automatic: break  // a fresh anonymous mapping reads as zeros
            case .object, .pages: p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            }
        }
        observers.recordAllocation?(p, bytes, context.site)
        return p
    }

    // MARK: Reports

    func fail(_ context: AllocationContext, reason: String) -> UnsafeMutableRawPointer? {
        pages.countFailure()
        counters.withLock { c in
            if !context.blocking { c.failNonBlocking += 1 }
            else {
                switch context.persistence {
                case .failFast: c.failFailFast += 1
                case .retryWhileProgress: c.failRetryWhileProgress += 1
                case .standard: c.failStandard += 1
                }
            }
        }
        if context.reportsFailure, let suppressed = failureReports.admit() {
            let s = pages.pageStatistics()
            let free = s.availablePages << 2
            pages.events.emit(.allocationFailure(AllocationFailure(
                request: context.request, policy: context.policy.description, scope: context.scope.description,
                tier: context.tier, site: context.site, reason: reason, suppressed: suppressed,
                snapshot: "free \(free) kB (min \(pages.watermarks.min << 2) kB, low \(pages.watermarks.low << 2) kB, high \(pages.watermarks.high << 2) kB); free blocks per order \(s.freeBlocks)",
                group: context.group?.name)))
        }
        return nil
    }

    func reportConflict(_ context: AllocationContext, _ resolution: String) {
        let site = context.site ?? CallSite("?", 0)
        let first = conflictSites.withLock { $0.insert(site).inserted }
        guard first else { return }
        counters.withLock { $0.scopeConflicts += 1 }
        pages.events.emit(.scopeConflict(ScopeConflict(
            call: "allocateGuaranteed(\(context.request), .\(context.guarantee.map { "\($0)" } ?? "?"))",
            scope: context.scope.description, resolution: resolution, site: context.site)))
    }

    private func reportStall(_ context: AllocationContext, attempts: Int, stalledFor: Duration) {
        counters.withLock { $0.stallReports += 1 }
        pages.events.emit(.allocationStall(AllocationStall(
            request: context.request, policy: context.policy.description, scope: context.scope.description,
            guarantee: context.guarantee, site: context.site, attempts: attempts, stalledFor: stalledFor)))
    }
}

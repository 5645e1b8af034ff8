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

/// The seam between the slow path and the reclaim layer: direct reclaim
/// returns the pages it gave back to the buddy allocator; the OOM handler
/// picks and notifies a victim. Until shrinkers and groups are registered,
/// direct reclaim drains the per-thread lists and there is no victim.
struct ReclaimHooks: Sendable {
    var directReclaim: @Sendable (_ context: AllocationContext, _ order: Int) -> Int
    var outOfMemory: @Sendable (_ context: AllocationContext) -> OOMOutcome
    /// Whether a victim told to release memory still holds some (a request
    /// waiting after a kill stops waiting once this is false).
    var victimReleasing: @Sendable () -> Bool = { true }
}

/// Counters of the slow path (vmstat).
struct SlowPathCounters: Sendable {
    var allocstall = 0           // direct reclaim entries
    var directReclaimPages = 0   // pages direct reclaim gave back
    var stallReports = 0
    var scopeConflicts = 0
    var oomInvocations = 0
    var oomReapTimeouts = 0     // waits for a victim's memory that ran into oomReapTimeout
    var faultsInjected = 0
    var guaranteedWaits = 0
    var reserveUnlocks = 0       // .useReserves requests that went to the .high tier
    var failNonBlocking = 0, failFailFast = 0, failRetryWhileProgress = 0, failStandard = 0
}

/// The allocation slow path, steps 1–10 of the design ("Slow path, in order"), for every request
/// that the fast path did not serve. Kernel analogue: `__alloc_pages_slowpath`.
@usableFromInline
final class SlowPath: Sendable {
    let core: PageAllocator
    let configuration: MemoryConfiguration
    let pressure: PressureTracker
    let virtual: VirtualAllocator
    /// The inlinable fast path, for requests the slow path splits into blocks.
    var pages: PageFastPath { PageFastPath(slow: self) }
    let hooks: Locked<ReclaimHooks>
    let counters = Locked(SlowPathCounters())
    let failureReports = ReportRateLimiter()
    private let conflictSites = Locked<Set<CallSite>>([])
    let faults: FaultInjector?
    /// Threads armed with `failNthAllocation` for this system.
    let armedThreads = Atomic<Int>(0)

    init(core: PageAllocator, configuration: MemoryConfiguration, pressure: PressureTracker, virtual: VirtualAllocator) {
        self.virtual = virtual
        self.core = core
        self.configuration = configuration
        self.pressure = pressure
        self.faults = configuration.faultInjection.map(FaultInjector.init)
        hooks = Locked(ReclaimHooks(
            directReclaim: { [core] _, _ in core.drainForReclaim() },
            outOfMemory: { _ in .noVictim }))
        updateFastPath()
    }

    /// Fault injection needs to see every call: it closes the lock-free fast
    /// path (by raising its threshold) while it is configured or armed.
    func updateFastPath() {
        core.fastPathHolds.store((faults != nil ? 1 : 0) + (core.profile != nil ? 1 : 0)
                                 + armedThreads.load(ordering: .relaxed), ordering: .relaxed)
        core.refreshFastPath()
    }

    // MARK: Entry

    /// Allocates `2^order` pages for a request that missed the fast path.
    /// `byteCount` is the size asked for (for reports and fault-injection
    /// space); `guarantee` is the call's own.
    /// `injectable` is false for the internal steps of a larger request
    /// (kvmalloc's contiguous attempt, vmalloc's blocks): fault injection
    /// counts and fails the caller's request once, at its entry.
    func allocate(order: Int, byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?,
                  site: CallSite?, request: RequestDescription, injectable: Bool = true) -> UnsafeMutableRawPointer? {
        switch admit(byteCount: byteCount, policy: policy, guarantee: guarantee, site: site, request: request,
                     injectable: injectable) {
        case .proceed(let context): return allocate(order: order, context: context)
        case .failed: return nil
        }
    }

    /// What `admit` decided.
    enum Admission {
        /// Go on with this resolved context.
        case proceed(AllocationContext)
        /// The request failed already (injected fault), and was reported.
        case failed
    }

    /// What every request does before step 1, whatever layer serves it:
    /// resolve the context (R1–R7), report a scope conflict, check held
    /// reclaim-checked locks, and fault injection (`cache` names the object
    /// cache for its filter).
    func admit(byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?, site: CallSite?,
               request: RequestDescription, cache: String? = nil, injectable: Bool = true) -> Admission {
        let scope = AllocationScope.current
        let group = policy.group ?? scope.charging
        var context = AllocationContext.resolve(
            request, policy: policy, guarantee: guarantee, scope: scope, site: site,
            isOOMVictim: group?.isOOMVictim ?? false)
        if let group, group.isRemoved {
            core.reportInvalid(InvalidRequest(operation: "allocate charged to group \(group.name)",
                                              reason: "the group was removed and cannot be charged", site: site))
            // A guaranteed request has no nil to return: it is served uncharged.
            guard context.guarantee != nil else { return .failed }
            context.group = nil
        }
        if let conflict = context.conflict { reportConflict(context, conflict) }
        if cmm_thread_slots_get().pointee.heldCheckedLocks > 0 {
            ReclaimRecursionChecker.shared.checkAllocation(context, events: core.events)
        }
        if injectable && context.guarantee == nil && shouldInjectFailure(byteCount: byteCount, site: site, cache: cache) {
            counters.withLock { $0.faultsInjected += 1 }
            _ = fail(context, reason: "failure injected (fault injection)")
            return .failed
        }
        return .proceed(context)
    }

    /// Steps 1–10 for an admitted request.
    func allocate(order: Int, context: AllocationContext) -> UnsafeMutableRawPointer? {
        let lists: PerThreadPageLists? = order < perThreadOrderCount && core.listLimits[order] > 0
            ? core.listsForCurrentThread() : nil
        // 1. Above low: a cached block, or one from the buddy lists with a batched refill.
        if let lists, let pfn = core.popCached(order: order, from: lists) { return finish(pfn, order, context) }
        if let pfn = core.takeBlock(order: order, floor: core.watermarks.low, refill: lists) {
            return finish(pfn, order, context)
        }
        // 2. Below low: wake the background reclaimer.
        core.wakeBackgroundReclaim()
        // 3. Down to the tier's floor, with this thread's cached blocks returned first.
        if let lists, lists.cachedPages > 0 { core.drain(lists, keepingFraction: 0) }
        if let pfn = take(order, context.tier) { return finish(pfn, order, context) }
        // 4. Non-blocking: fail (R7: never sleeps, never reclaims).
        guard context.blocking else {
            return fail(context, reason: "non-blocking request below its \(context.tier) floor")
        }
        return retry(order: order, context: context)
    }

    /// Steps 5–10: reclaim or wait, retry, OOM, stall reports. The time spent
    /// here is an allocation stall (pressure).
    private func retry(order: Int, context: AllocationContext) -> UnsafeMutableRawPointer? {
        pressure.enterStall()
        defer { pressure.exitStall() }
        let maxRetries = configuration.maxReclaimRetries
        let clock = ContinuousClock()
        let start = clock.now
        var nextStallReport = start + configuration.stallReportInterval
        var tier = context.tier
        var attempts = 2, rounds = 0, roundsWithoutProgress = 0, oomRounds = 0
        // Waiting for the background reclaimer starts longer than backing off after a
        // fruitless direct reclaim: the reclaimer needs time to run a pass.
        var backoff = Duration.milliseconds(context.directReclaim ? 1 : 10)
        var reservesUnlocked = false
        if context.guarantee != nil { counters.withLock { $0.guaranteedWaits += 1 } }
        while true {
            let generation = core.waitQueue.generation
            var progress = false
            if context.directReclaim {
                // 5. Direct reclaim, running as .reclaiming (domains respected by the reclaimer).
                progress = directReclaim(context, order: order) > 0
            } else {
                // Restricted: wait for the background reclaimer (woken again) or any free.
                core.wakeBackgroundReclaim()
                progress = core.waitQueue.wait(since: generation, timeout: backoff)
                backoff = min(backoff * 2, .milliseconds(100))
            }
            attempts += 1
            if let pfn = take(order, tier) { return finish(pfn, order, context) }
            // The request's own group became an OOM victim meanwhile (another thread's
            // request chose it): it gets the victim's reserve, and a fallible request
            // fails now instead of waiting for memory that only its own caller can free.
            // Kernel analogue: the victim's ALLOC_OOM access, and "goto nopage" for a victim.
            if tier < .oomVictim, let group = context.group, group.isOOMVictim {
                tier = .oomVictim
                if let pfn = take(order, tier) { return finish(pfn, order, context) }
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
                    switch outOfMemory(order, tier, context) {
                    case .allocated(let pfn): return finish(pfn, order, context)
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
                    if context.mayInvokeOOM, case .allocated(let pfn) = outOfMemory(order, tier, context) {
                        return finish(pfn, order, context)
                    }
                    tier = max(tier, .high)
                    if let pfn = take(order, tier) { return finish(pfn, order, context) }
                }
            case .retryForever?:
                // 9. Loop for ever: never the OOM handler, never reserves.
                break
            }
            let now = clock.now
            if now >= nextStallReport {
                reportStall(context, attempts: attempts, stalledFor: now - start)
                nextStallReport = now + configuration.stallReportInterval
            }
            // Bounded back-off before the next round, cut short by any free.
            if context.directReclaim && !progress {
                core.waitQueue.wait(since: generation, timeout: backoff)
                backoff = min(backoff * 2, .milliseconds(100))
            }
        }
    }

    // MARK: Steps

    private func take(_ order: Int, _ tier: ReserveTier) -> Int? {
        core.takeBlock(order: order, floor: tier.floor(min: core.watermarks.min), refill: nil)
    }

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
    private func outOfMemory(_ order: Int, _ tier: ReserveTier, _ context: AllocationContext) -> OOMStep {
        counters.withLock { $0.oomInvocations += 1 }
        let (handler, victimReleasing) = hooks.withLock { ($0.outOfMemory, $0.victimReleasing) }
        switch handler(context) {
        case .killed, .waitingForVictim:
            // Wait until the memory is there, or the victim has released what it had
            // (others may have taken it meanwhile: the caller reclaims and retries),
            // or the reap timeout passed.
            let deadline = ContinuousClock.now + configuration.oomReapTimeout
            while true {
                // A request of the victim itself does not wait for its own memory: it may
                // use the victim's reserve, and otherwise its caller must release first.
                // Checked every round: another thread's OOM step may pick this request's
                // group while it waits ("another OOM kill in progress").
                if let group = context.group, group.isOOMVictim {
                    return take(order, max(tier, .oomVictim)).map(OOMStep.allocated) ?? .victimIsSelf
                }
                let generation = core.waitQueue.generation
                if let pfn = take(order, tier) { return .allocated(pfn) }
                if !victimReleasing() { break }
                if ContinuousClock.now >= deadline {
                    counters.withLock { $0.oomReapTimeouts += 1 }
                    break
                }
                core.waitQueue.wait(since: generation, timeout: .milliseconds(10))
            }
            return take(order, tier).map(OOMStep.allocated) ?? .victimReleased
        case .noVictim:
            noVictimLeft(trigger: context.description)
            return .noVictim
        }
    }

    /// What the OOM step did for a request.
    private enum OOMStep {
        /// The request got its block.
        case allocated(Int)
        /// A victim released memory, but it went elsewhere: reclaim and retry.
        case victimReleased
        /// The request's own group is the victim: it must not wait for itself.
        case victimIsSelf
        /// No victim was left.
        case noVictim
    }

    /// The OOM handler found no victim: `OOMPolicy.abort` stops the process
    /// with a full report; `.failRequests` lets the caller fail (guaranteed
    /// requests keep waiting and reporting stalls).
    func noVictimLeft(trigger: String) {
        guard configuration.oomPolicy == .abort else { return }
        let s = core.pageStatistics()
        let groups = core.groups.all.map { "  \($0.name): usage \($0.usage >> 10) kB, oom_score_adj \($0.oomScoreAdjust)" }
        fatalError("""
            swift-mm: out of memory and no OOM victim left (OOMPolicy.abort)
            trigger: \(trigger)
            free pages \(s.buddyFreePages + s.cachedPages), min \(core.watermarks.min), low \(core.watermarks.low), high \(core.watermarks.high)
            free blocks per order: \(s.freeBlocks)
            groups:
            \(groups.isEmpty ? "  (none)" : groups.joined(separator: "\n"))
            """)
    }

    private func finish(_ pfn: Int, _ order: Int, _ context: AllocationContext) -> UnsafeMutableRawPointer {
        let p = core.arena.address(ofPage: pfn)
        if let group = context.group {
            group.charge(pageSize << order)
            core.arena.frames[pfn].group = group.id
        }
        if context.policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: pageSize << order) }
        return p
    }

    // MARK: Reports

    func fail(_ context: AllocationContext, reason: String) -> UnsafeMutableRawPointer? {
        core.countFailure()
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
            let s = core.pageStatistics()
            let free = (s.buddyFreePages + s.cachedPages) << 2
            core.events.emit(.allocationFailure(AllocationFailure(
                request: context.request, policy: context.policy.description, scope: context.scope.description,
                tier: context.tier, site: context.site, reason: reason, suppressed: suppressed,
                snapshot: "free \(free) kB (min \(core.watermarks.min << 2) kB, low \(core.watermarks.low << 2) kB, high \(core.watermarks.high << 2) kB); free blocks per order \(s.freeBlocks)")))
        }
        return nil
    }

    private func reportConflict(_ context: AllocationContext, _ resolution: String) {
        let site = context.site ?? CallSite(file: "?", line: 0)
        let first = conflictSites.withLock { $0.insert(site).inserted }
        guard first else { return }
        counters.withLock { $0.scopeConflicts += 1 }
        core.events.emit(.scopeConflict(ScopeConflict(
            call: "allocateGuaranteed(\(context.request), .\(context.guarantee.map { "\($0)" } ?? "?"))",
            scope: context.scope.description, resolution: resolution, site: context.site)))
    }

    private func reportStall(_ context: AllocationContext, attempts: Int, stalledFor: Duration) {
        counters.withLock { $0.stallReports += 1 }
        core.events.emit(.allocationStall(AllocationStall(
            request: context.request, policy: context.policy.description, scope: context.scope.description,
            guarantee: context.guarantee, site: context.site, attempts: attempts, stalledFor: stalledFor)))
    }

    // MARK: Fault injection

    private func shouldInjectFailure(byteCount: Int, site: CallSite?, cache: String?) -> Bool {
        if armedThreads.load(ordering: .relaxed) > 0, let state = ThreadScopeState.current,
           state.pointee.failNthSystem == core.systemID, state.pointee.failNth > 0 {
            state.pointee.failNth -= 1
            if state.pointee.failNth == 0 {
                state.pointee.failNthSystem = 0
                armedThreads.wrappingSubtract(1, ordering: .relaxed)
                updateFastPath()
                return true
            }
        }
        return faults?.shouldFail(byteCount: byteCount, site: site, cache: cache) ?? false
    }

    /// Arms (n ≥ 1) or disarms (n = 0) fail-the-Nth on the calling thread.
    func failNth(_ n: Int) {
        let state = ThreadScopeState.currentOrCreate()
        let wasArmed = state.pointee.failNthSystem == core.systemID && state.pointee.failNth > 0
        if wasArmed { armedThreads.wrappingSubtract(1, ordering: .relaxed) }
        if n > 0 {
            state.pointee.failNth = n
            state.pointee.failNthSystem = core.systemID
            armedThreads.wrappingAdd(1, ordering: .relaxed)
        } else {
            state.pointee.failNth = 0
            state.pointee.failNthSystem = 0
        }
        updateFastPath()
    }
}

// SPDX-License-Identifier: Apache-2.0
import Glibc
import Logging
import Synchronization

/// A memory manager over one arena: the facade of swift-mm.
///
/// ```swift
/// let mm = try MemorySystem(.init(capacity: 512 << 20))
/// let page = mm.allocatePages(order: 0)     // one 4 KiB page
/// mm.freePages(page!, order: 0)
/// print(mm.statistics().meminfo)
/// ```
///
/// Every method may be called from any thread. Dropping the last reference
/// unmaps the arena: memory still allocated from it becomes invalid.
public final class MemorySystem: Sendable {
    /// The configuration in force (capacity rounded, watermarks resolved).
    public let configuration: MemoryConfiguration
    /// The inlinable fast path of the page allocator.
    @usableFromInline let pageFastPath: PageFastPath
    /// The inlinable fast path of the object layer.
    @usableFromInline let objectFastPath: ObjectFastPath
    /// Every request the fast paths do not serve.
    @usableFromInline let slowPath: SlowPath
    /// The vmalloc region, for `owns(_:)`.
    @usableFromInline let virtualBase: UInt
    @usableFromInline let virtualBytes: UInt
    let pages: PageAllocator
    @usableFromInline let slab: SlabAllocator
    let virtual: VirtualAllocator
    let events: EventHub
    let reclaim: ReclaimEngine
    let faults: FaultInjector
    let profile: AllocationProfile?
    let backgroundReclaimer: BackgroundReclaimer?

    /// Creates a system: maps the arena and sets up the allocators.
    /// - Throws: `ConfigurationError` for an invalid configuration,
    ///   `SystemError` when the OS refuses a mapping.
    public convenience init(_ configuration: MemoryConfiguration) throws {
        try self.init(configuration, syscalls: .live)
    }

    /// Builds the boxes bottom-up and wires the hooks through which the
    /// lower boxes reach reclaim, groups and diagnostics (see README,
    /// "Architecture"): nothing below names anything above it.
    init(_ configuration: MemoryConfiguration, syscalls: Syscalls) throws {
        let config = try configuration.validated()
        let systemID = MemorySystem.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let arena = try Arena(capacity: config.capacity, name: config.name, syscalls: syscalls)
        let events = EventHub()
        if config.logsEvents { events.add(EventHub.loggingSink(config.logger ?? Logger(label: "mm"))) }
        let oom = OOMKiller(capacity: config.capacity, reapTimeout: config.oomReapTimeout, events: events)
        let profile = config.allocationProfiling ? AllocationProfile() : nil
        var recordFree: (@Sendable (UnsafeMutableRawPointer) -> Void)?
        var recordAllocation: (@Sendable (UnsafeMutableRawPointer, Int, CallSite?) -> Void)?
        if let profile {
            recordFree = { p in profile.recordFree(p) }
            recordAllocation = { p, bytes, site in profile.recordAllocation(p, bytes: bytes, site: site ?? CallSite("?", 0)) }
        }
        let pages = PageAllocator(
            systemID: systemID, arena: arena, watermarks: config.effectiveWatermarks,
            perThreadLists: config.perThreadPageLists, events: events, hardeningAction: config.hardeningAction,
            releaseOrder: config.releaseOrder, releaseDelay: config.releaseDelay,
            hooks: PageAllocatorHooks(uncharge: { [oom] id, bytes in oom.uncharge(groupID: id, bytes: bytes) },
                                      recordFree: recordFree))
        let slab = try SlabAllocator(pages: pages, kmallocFlags: config.kmallocDebugFlags, recordFree: recordFree,
                                 uncharge: { [oom] id, bytes in oom.uncharge(groupID: id, bytes: bytes) })
        let virtual = try VirtualAllocator(pages: pages, regionBytes: max(2 * config.capacity, 64 << 20),
                                           mapLimit: config.maxVirtualMappings ?? VirtualAllocator.defaultMapLimit(),
                                           recordFree: recordFree)
        let router = PlacementRouter(pages: pages, slab: slab, virtual: virtual)
        let pressure = PressureTracker(population: { PageAllocator.lists.attachedCount(systemID) })
        let faults = FaultInjector(config.faultInjection, systemID: systemID, gate: pages.gate,
                                   otherHolds: profile != nil ? 1 : 0)
        let slowPath = SlowPath(router: router, settings: SlowPathSettings(
            maxReclaimRetries: config.maxReclaimRetries, stallReportInterval: config.stallReportInterval,
            oomReapTimeout: config.oomReapTimeout), observers: SlowPathObservers(
            stallBegan: { [pressure] in pressure.enterStall() },
            stallEnded: { [pressure] in pressure.exitStall() },
            injectFailure: { [faults] bytes, site, cache in faults.shouldFail(byteCount: bytes, site: site, cache: cache) },
            recordAllocation: recordAllocation))
        // Shrinkers run on helper threads; what they free lands in the helper's caches
        // and goes back to the shared pools after each call.
        let shrinkers = ShrinkerRegistry(checker: .shared, events: events, deadline: config.shrinkerDeadline) { [pages, slab] in
            slab.drainCurrentThread()
            pages.drainCallingThread()
        }
        let engine = ReclaimEngine(pages: pages, slab: slab, shrinkers: shrinkers, oom: oom, pressure: pressure,
                                   oomPolicy: config.oomPolicy)
        slowPath.hooks.withLock { hooks in
            hooks.directReclaim = { [engine] (context: AllocationContext, order: Int) in engine.directReclaim(context, order: order) }
            hooks.outOfMemory = { [engine] (context: AllocationContext) in engine.outOfMemory(trigger: context.description) }
            hooks.victimReleasing = { [oom] in oom.hasReleasingVictim }
            hooks.groupReclaim = { [engine] context, group, bytes in engine.reclaimGroup(group, context: context, bytes: bytes) }
            hooks.groupOutOfMemory = { [engine] context, group in
                engine.outOfMemory(trigger: "\(context.description), at the max of group \(group.name)", within: group)
            }
        }
        self.configuration = config
        self.events = events
        self.pages = pages
        self.slab = slab
        self.virtual = virtual
        self.virtualBase = virtual.region.lowerBound
        self.virtualBytes = UInt(virtual.region.count)
        self.slowPath = slowPath
        self.reclaim = engine
        self.faults = faults
        self.profile = profile
        self.pageFastPath = PageFastPath(pages)
        self.objectFastPath = ObjectFastPath(slab: slab)
        if config.backgroundReclaim {
            let reclaimer = BackgroundReclaimer(engine: engine)
            pages.lowWatermarkHook.withLock { $0 = { [reclaimer] in reclaimer.wake() } }
            reclaimer.start()
            backgroundReclaimer = reclaimer
        } else {
            backgroundReclaimer = nil
        }
        if let limit = config.limit { setLimit(limit) }
        ChargingScopes.addObserver(systemID) { [gate = pages.gate] active in gate.setChargingActive(active) }
        // In a forked child: vanished threads' caches come back (once per process, for
        // every system), then this system forgets what those threads were doing. The
        // background reclaimer's thread did not survive the fork either: the child's
        // own starts at its first wake-up (not from the handler).
        MemorySystem.installForkRepairs
        ForkGate.addChildRepair(id: systemID, stage: 2) { [pages, engine] in
            pages.waitQueue.resetAfterFork()
            engine.pressure.resetAfterFork()
            engine.shrinkers.resetAfterFork()
            engine.oom.resetAfterFork()
        }
    }

    /// Identifiers of systems (0 means none).
    private static let nextID = Atomic<UInt64>(1)

    /// The layers' per-thread caches of vanished threads come back in a forked child.
    private static let installForkRepairs: Void = {
        ForkGate.addChildRepair(id: 0, stage: 0) { SlabAllocator.magazines.repairAfterFork() }
        ForkGate.addChildRepair(id: 0, stage: 1) { PageAllocator.lists.repairAfterFork() }
    }()

    /// Releases everything the system holds: the background reclaimer
    /// thread, every thread's cached blocks and magazine stacks for it (live
    /// threads included), and, once the layers are released, the arena's
    /// mappings. The layers refer to one another through the reclaim hooks;
    /// those references are cut here so that nothing outlives the system.
    deinit {
        if configuration.trapsOnMemoryOutstandingAtDrop, let outstanding = outstandingAllocations() {
            fatalError("swift-mm: MemorySystem dropped with memory still allocated from it (\(outstanding)); every pointer into it is now invalid (trapsOnMemoryOutstandingAtDrop)")
        }
        ChargingScopes.removeObserver(pages.systemID)
        ForkGate.removeChildRepairs(id: pages.systemID)
        pages.lowWatermarkHook.withLock { $0 = nil }
        backgroundReclaimer?.stop()
        reclaim.shrinkers.runner.stop()
        let pages = self.pages
        slowPath.hooks.withLock { hooks in
            hooks.directReclaim = { [pages] _, _ in pages.drainForReclaim() }
            hooks.outOfMemory = { _ in .noVictim }
            hooks.victimReleasing = { false }
            hooks.groupReclaim = { _, _, _ in 0 }
            hooks.groupOutOfMemory = { _, _ in .noVictim }
        }
        slab.detachAllThreads()
        pages.detachAllThreads()
    }

    /// What is still allocated, in words, or nil when nothing is: pages and
    /// vmalloc areas outside slabs, and live objects in slabs (objects cached
    /// in magazines and depots are free).
    func outstandingAllocations() -> String? {
        let pageStats = pages.pageStatistics()
        let slabs = slab.statistics()
        let slabPages = slabs.reduce(0) { $0 + $1.slabs * $1.pagesPerSlab }
        let liveObjects = slabs.reduce(0) { $0 + $1.activeObjects }
        let otherPages = pages.arena.pageCount - pageStats.buddyFreePages - pageStats.cachedPages - slabPages
        guard otherPages > 0 || liveObjects > 0 else { return nil }
        return "\(otherPages) pages or vmalloc pages, \(liveObjects) slab objects"
    }

    // MARK: Pages

    /// Allocates `2^order` contiguous pages (4 KiB … 4 MiB), aligned to their size.
    ///
    /// Returns `nil` when the request fails, and for an order outside
    /// `0...maxOrder` (with an `invalidRequest` event).
    /// Kernel analogue: `alloc_pages(gfp, order)`.
    /// - Parameters:
    ///   - order: the block is `2^order` pages, 0 … `maxOrder`.
    ///   - policy: what the request may do when memory is short.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    /// - Returns: the block, aligned to its size, or nil.
    @inlinable
    public func allocatePages(order: Int, policy: AllocationPolicy = .standard,
                              file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer? {
        pageFastPath.allocate(order: order, policy: policy)
            ?? slowPath.allocatePages(order: order, policy: policy, file: file, line: line)
    }

    /// Frees pages from `allocatePages` with the same `order`.
    ///
    /// A pointer outside the arena, misaligned for `order`, never allocated,
    /// already free, or freed with another order is a `hardeningViolation`:
    /// it traps by default (`HardeningAction.trap`), or is reported and ignored.
    /// Kernel analogue: `__free_pages(page, order)`.
    /// - Parameters:
    ///   - pointer: a block from `allocatePages`.
    ///   - order: the order it was allocated with.
    @inlinable
    public func freePages(_ pointer: UnsafeMutableRawPointer, order: Int) {
        if !pageFastPath.free(pointer, order: order) { pageFastPath.allocator.freeSlow(pointer, order: order) }
    }

    /// Returns every block in per-thread lists to the buddy allocator, and
    /// every cached object and completely free slab to the page allocator
    /// first (`shrinkObjectCaches()`): the calling thread's at once, other
    /// threads' at their next slow path.
    /// Kernel analogue: `drain_all_pages` after `kmem_cache_shrink`.
    public func drainPerThreadLists() {
        _ = slab.reclaim()
        pages.drainAllLists()
    }

    /// Returns the calling thread's cached objects and every completely free
    /// slab to the page allocator (other threads return theirs at their next
    /// slow path); returns the bytes of slabs freed. Reclaim does this on its
    /// own; call it to see freed objects as free pages.
    /// Kernel analogue: `kmem_cache_shrink` on every cache.
    @discardableResult
    public func shrinkObjectCaches() -> Int {
        slab.reclaim() << MM.pageShift
    }

    /// Returns all free blocks of at least `releaseOrder` (9 if automatic
    /// release is off) to the OS now, whatever their age and the watermarks.
    /// Returns the bytes released. Kernel analogue: none; like `malloc_trim`.
    @discardableResult
    public func releaseFreeMemory() -> Int {
        pages.releasePass(minOrder: configuration.releaseOrder ?? 9, minimumAge: 0, limit: .max, now: pages.tick) << MM.pageShift
    }

    // MARK: Reclaim and groups

    /// Registers a cache that reclaim may shrink. Kernel analogue: `shrinker_register`.
    /// - Parameter shrinker: the cache to shrink under pressure.
    /// - Returns: the registration; `unregister()` removes it.
    public func registerShrinker(_ shrinker: any Shrinker) -> ShrinkerRegistration {
        reclaim.shrinkers.register(shrinker)
    }

    /// Proactive reclaim: runs the shrinkers (unrestricted, as the background
    /// reclaimer does) until `bytes` have been returned to the buddy
    /// allocator or nothing more can be freed; returns the bytes freed.
    /// Kernel analogue: writing to cgroup v2 `memory.reclaim`.
    /// - Parameter bytes: how much to return to the buddy allocator.
    /// - Returns: the bytes returned.
    @discardableResult
    public func reclaim(bytes: Int) -> Int {
        let token = AllocationScope.enter(.reclaiming)
        defer { token.exit() }
        return reclaim.proactive(pages: (max(0, bytes) + MM.pageSize - 1) >> MM.pageShift) << MM.pageShift
    }

    /// The process budget in bytes (R11): at most `capacity`, which it is by
    /// default. It acts as the root group's `max`: free memory is
    /// `limit − used` and the watermarks are computed from it.
    public var limit: Int { pages.limitPages.load(ordering: .relaxed) << MM.pageShift }

    /// Moves the process budget; clamped to `1 MiB…capacity` (rounded down
    /// to whole pages) and returns at once. Lowering it makes free memory
    /// `limit − used` immediately: requests see the new watermarks, free
    /// memory beyond the limit goes back to the OS, and background reclaim
    /// brings usage under the limit when memory is reclaimable (else the
    /// OOM handler per R6, then an `overLimit` report). Raising it gives the
    /// memory back to requests at once (waiting requests are woken).
    /// Derived watermarks are recomputed from the limit as from a capacity;
    /// explicit ones stay unless they no longer fit under half the limit.
    /// Kernel analogue: a balloon driver's inflate/deflate; cgroup v2
    /// `memory.max` of the root.
    /// - Parameter bytes: the new budget, clamped to 1 MiB … `capacity`.
    public func setLimit(_ bytes: Int) {
        let pagesLimit = Swift.min(configuration.capacity, Swift.max(1 << 20, bytes)) >> MM.pageShift
        let limitBytes = pagesLimit << MM.pageShift
        var marks = configuration.watermarks ?? .derived(capacity: limitBytes, scaleFactor: configuration.watermarkScaleFactor)
        if marks.high >= limitBytes / 2 {
            marks = .derived(capacity: limitBytes, scaleFactor: configuration.watermarkScaleFactor)
        }
        // Tiny limits: keep the three apart and below half the limit.
        var w = PageWatermarks(marks)
        if w.high >= pagesLimit / 2 || w.min >= w.low || w.low >= w.high {
            let min = Swift.max(1, pagesLimit / 64)
            w = PageWatermarks(min: min, low: min + Swift.max(1, min / 4), high: min + 2 * Swift.max(1, min / 4))
        }
        reclaim.limitReported.store(false, ordering: .relaxed)
        pages.setLimit(pages: pagesLimit, watermarks: w)
    }

    /// The watermarks in force now (they move with `limit`).
    public var watermarks: Watermarks {
        let w = pages.watermarks
        return Watermarks(min: w.min << MM.pageShift, low: w.low << MM.pageShift, high: w.high << MM.pageShift)
    }

    /// Creates a group to charge allocations to (`policy.group`, `.charging(group)`).
    /// The OOM handler picks the group with the highest
    /// `ownUsage + oomScoreAdjust × capacity / 1000` (−1000: never) and calls
    /// its `onOOMKill` once, which must release memory soon; until it does,
    /// the group's allocations may use the `.oomVictim` reserve.
    ///
    /// `limits` are the group's `min`/`low`/`high`/`max` (rules R8–R10);
    /// incoherent limits are reported as an `invalidRequest` and the group
    /// is created without limits.
    /// Kernel analogue: creating a memory cgroup and writing its `memory.*` files.
    /// - Parameters:
    ///   - name: the group's name in reports.
    ///   - parent: the enclosing group (usage is charged up the tree).
    ///   - oomScoreAdjust: −1000 (never killed) … 1000.
    ///   - limits: `min`/`low`/`high`/`max` (default: none).
    ///   - onOOMKill: called once when the OOM handler picks the group; must release memory soon.
    /// - Returns: the group.
    public func makeGroup(name: String, parent: MemoryGroup? = nil, oomScoreAdjust: Int = 0,
                          limits: MemoryLimits = .init(),
                          onOOMKill: @escaping @Sendable (MemoryGroup) -> Void = { _ in }) -> MemoryGroup {
        var limits = limits
        if let problem = limits.incoherence {
            pages.reportInvalid(InvalidRequest(operation: "makeGroup(name: \(name), limits: \(limits))",
                                               reason: "incoherent limits: \(problem); the group is created without limits", site: nil))
            limits = MemoryLimits()
        }
        return reclaim.oom.makeGroup(name: name, parent: parent, oomScoreAdjust: oomScoreAdjust, limits: limits,
                                     onOOMKill: onOOMKill)
    }

    /// Sets `group`'s limits. Throws a `MemoryGroupError` (`.incoherentLimits`:
    /// a negative value, `high > max` or `min > max`; `.alreadyRemoved`,
    /// `.foreignGroup`) and keeps the old limits. A `max` below the group's
    /// usage is accepted: the calling thread reclaims from the group's
    /// subtree at once and, if that is not enough, invokes the OOM handler
    /// for the subtree, as writing `memory.max` does in the kernel; a `high`
    /// below usage is left to the next charges (R9).
    /// Kernel analogue: writing `memory.min`, `memory.low`, `memory.high`, `memory.max`.
    /// - Parameters:
    ///   - limits: the new limits.
    ///   - group: a live group of this system.
    /// - Throws: `MemoryGroupError` (`.incoherentLimits`, `.alreadyRemoved`, `.foreignGroup`).
    public func setLimits(_ limits: MemoryLimits, for group: MemoryGroup) throws {
        try reclaim.oom.checkMember(group)
        if let problem = limits.incoherence {
            throw MemoryGroupError(.incoherentLimits, "limits \(limits) for group \(group.name) are incoherent: \(problem)")
        }
        group.limitWords.store(limits)
        if let max = limits.max, group.usage > max { enforceMax(max, on: group) }
    }

    /// A `max` just set below usage: reclaim from the subtree, then the OOM
    /// handler for it, a bounded number of times. Kernel analogue: `memory_max_write`.
    private func enforceMax(_ max: Int, on group: MemoryGroup) {
        let token = AllocationScope.enter(.reclaiming)
        defer { token.exit() }
        for _ in 0..<configuration.maxReclaimRetries where group.usage > max {
            if reclaim.reclaimGroup(group, context: nil, bytes: group.usage - max) > 0 { continue }
            group.count(.oom)
            switch reclaim.outOfMemory(trigger: "max of group \(group.name) set below its usage", within: group) {
            case .noVictim: return
            case .killed, .waitingForVictim:
                let deadline = ContinuousClock.now + configuration.oomReapTimeout
                let usage = group.usage
                while group.usage >= usage && ContinuousClock.now < deadline { usleep(1000) }
            }
        }
    }

    /// Removes `group`. Refused with a `MemoryGroupError` while the group
    /// (or a descendant) is charged memory (`.hasUsage`) or has child groups
    /// (`.hasChildren`); a removed group cannot be charged again (such a
    /// request is an `invalidRequest` and returns nil). Groups that nobody
    /// refers to any more and that hold no memory are dropped on their own.
    /// Kernel analogue: `rmdir` of a memory cgroup.
    /// - Parameter group: a live group of this system without usage or children.
    /// - Throws: `MemoryGroupError` saying why not.
    public func removeGroup(_ group: MemoryGroup) throws(MemoryGroupError) {
        try reclaim.oom.remove(group)
    }

    // MARK: Events and statistics

    /// Adds a sink that receives every event of this system, on the thread
    /// that caused it. Sinks must not block for long.
    /// - Parameter sink: called with every event, on the thread that caused it.
    public func addEventSink(_ sink: @escaping @Sendable (MemoryEvent) -> Void) {
        events.add(sink)
    }

    /// A snapshot of the system's state and counters.
    public func statistics() -> MemoryStatistics {
        let p = pages.pageStatistics()
        let vm = virtual.snapshot()
        let slabs = slab.statistics()
        let reclaimableNames = Set(slab.allCaches.filter { $0.flags.contains(.reclaimable) }.map(\.name))
        let slabBytes = slabs.reduce(0) { $0 + ($1.slabs * $1.pagesPerSlab) << MM.pageShift }
        let reclaimableBytes = slabs.filter { reclaimableNames.contains($0.name) }
            .reduce(0) { $0 + ($1.slabs * $1.pagesPerSlab) << MM.pageShift }
        return MemoryStatistics(
            capacity: configuration.capacity,
            limit: limit,
            freeBytes: p.availablePages << MM.pageShift,
            perThreadFreeBytes: p.cachedPages << MM.pageShift,
            releasedBytes: p.releasedPages << MM.pageShift,
            residentBytes: pages.arena.residentBytes(belowPage: pages.zone.withLock { $0.buddy.frontier }) + virtual.residentBytes(),
            metadataResidentBytes: pages.arena.residentMetadataBytes(),
            watermarks: watermarks,
            freeBlocksPerOrder: p.freeBlocks,
            shrinkers: reclaim.shrinkers.statistics(),
            groups: reclaim.oom.all.map {
                .init(name: $0.name, usage: $0.usage, ownUsage: $0.ownUsage, oomScoreAdjust: $0.oomScoreAdjust,
                      limits: $0.limits, events: $0.events, parent: $0.parent?.name)
            },
            pressure: reclaim.pressure.snapshot(),
            vmallocTotalBytes: virtual.regionPages << MM.pageShift,
            vmallocUsedBytes: vm.mappedPages << MM.pageShift,
            vmallocinfo: vm.info,
            slabBytes: slabBytes,
            reclaimableSlabBytes: reclaimableBytes,
            slabCaches: slabs,
            allocationSites: profile?.snapshot(),
            pageAllocator: p.counters,
            slowPath: slowPath.counters.withLock { $0 },
            reclaim: reclaim.counters.withLock { $0 },
            virtual: vm.counters)
    }
}

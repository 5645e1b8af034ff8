// SPDX-License-Identifier: Apache-2.0
import Histogram
import MM
import Synchronization

/// Runs a scenario: one fresh `MemorySystem` per semantics, real threads,
/// real memory, real time. Kernel analogue: none — this is the lab where the
/// `__GFP_NOFAIL` debate is played out.
public enum ScenarioRunner {
    /// Runs every semantics of the scenario in turn and draws the conclusion.
    /// `progress(semantics, fraction)` is called about ten times a second.
    public static func run(_ scenario: Scenario,
                           progress: (@Sendable (CommitSemantics, Double) -> Void)? = nil) throws -> ScenarioReport {
        let runs = try (scenario.semantics ?? [.retryForever]).map { semantics in
            try run(scenario, semantics: semantics, progress: progress)
        }
        return ScenarioReport(scenario: scenario, runs: runs)
    }

    /// Runs the scenario once; `then` (if given) sees the system at the end,
    /// before teardown. `allocationProfiling` turns on allocinfo (every
    /// request then takes the slow path).
    public static func run(_ scenario: Scenario, semantics: CommitSemantics,
                           allocationProfiling: Bool = false,
                           progress: (@Sendable (CommitSemantics, Double) -> Void)? = nil,
                           then inspect: ((MemorySystem) -> Void)? = nil) throws -> RunReport {
        let run = try ScenarioRun(scenario: scenario, semantics: semantics, allocationProfiling: allocationProfiling)
        return run.execute(progress: progress, inspect: inspect)
    }
}

/// The shared state of one run.
final class ScenarioRun: Sendable {
    let scenario: Scenario
    let semantics: CommitSemantics
    let mm: MemorySystem
    let locks: [String: LabLock]
    let caches: [String: LabCache]
    let groups: [String: MemoryGroup]
    let stop = Atomic<Bool>(false)
    /// After teardown has given up on stuck threads: loops give up too.
    let abandon = Atomic<Bool>(false)
    let start: Double
    let transactions = Atomic<Int>(0)
    let operations = Atomic<Int>(0)
    let atomicFailures = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let hasTransactions: Bool
    let progressTimes = SharedValue<[Double]>([])
    let latency = SharedValue(Histogram<UInt64>(highestTrackableValue: 600_000_000))
    let eventTimes = SharedValue<[RunReport.Marker]>([])
    let samples = SharedValue<[RunReport.Sample]>([])
    /// Moments a direct (true) or background (false) reclaim pass ran since the previous sample.
    let reclaimMarks = SharedValue<[(t: Double, direct: Bool)]>([])
    /// The simulated PSI source and the monitor it drives (`arena.pressureMonitor`).
    let pressure: SimulatedPressure?
    let monitor: MemoryPressureMonitor?
    /// Per group: highest usage, lowest usage once it held memory, failed charged requests.
    let groupUsage = SharedValue<[String: (peak: Int, lowest: Int)]>([:])
    let groupFailures = SharedValue<[String: Int]>([:])
    /// The lowest process limit seen, and the arena's resident bytes then.
    let lowestLimit = SharedValue<(limit: Int, resident: Int)>((.max, 0))
    /// Runs made in this process: each run's allocation sites are numbered apart
    /// (the reclaim-recursion checker reports a lock and site once per process).
    private static let runCounter = Atomic<UInt>(0)
    /// The `line` of each operation's allocation site (`file` "scenario"), and the names.
    let siteBase: UInt
    let siteNames: [UInt: String]
    /// Operations the reclaim-recursion checker reported.
    let recursionFound = SharedValue<Set<String>>([])
    /// Groups the OOM handler killed (their caches stop growing), and each
    /// victim's exit: how long from the kill until its memory was released, or nil while it has not.
    let killedGroups = SharedValue<Set<String>>([])
    /// `oomVictimStuck` events.
    let victimStuckCount = Atomic<Int>(0)
    /// Exit routines of killed groups, joined at teardown.
    let exitThreads = SharedValue<[LabThread]>([])
    let victimExits = SharedValue<[String: Double?]>([:])
    /// Each lock's declared reclaim domain (the domain of the cache whose shrinker takes it).
    let lockDomains: [String: ReclaimDomain]
    private let residentStart = Atomic<Int>(0)
    var residentAtStart: Int {
        get { residentStart.load(ordering: .relaxed) }
        set { residentStart.store(newValue, ordering: .relaxed) }
    }

    init(scenario: Scenario, semantics: CommitSemantics, allocationProfiling: Bool = false) throws {
        self.scenario = scenario
        self.semantics = semantics
        var config = MemoryConfiguration(capacity: scenario.arena.capacity.bytes)
        config.logsEvents = false
        config.allocationProfiling = allocationProfiling
        config.stallReportInterval = (scenario.arena.stallReportInterval ?? Seconds(1)).duration
        if let w = scenario.arena.watermarks {
            config.watermarks = Watermarks(min: w.min.bytes, low: w.low.bytes, high: w.high.bytes)
        }
        config.limit = scenario.arena.limit?.bytes
        mm = try MemorySystem(config)
        if let m = scenario.arena.pressureMonitor {
            let source = SimulatedPressure()
            pressure = source
            monitor = try MemoryPressureMonitor(
                system: mm, source: .simulated(source),
                response: .init(floor: m.floor.bytes, step: m.step ?? 0.1, relaxAfter: (m.relaxAfter ?? Seconds(1)).duration))
        } else {
            pressure = nil
            monitor = nil
        }
        var groups: [String: MemoryGroup] = [:]
        let cacheSpecs = scenario.caches ?? []
        for g in scenario.groups ?? [] {
            let limits = MemoryLimits(min: g.min?.bytes ?? 0, low: g.low?.bytes ?? 0, high: g.high?.bytes, max: g.max?.bytes)
            groups[g.name] = mm.makeGroup(name: g.name, parent: g.parent.flatMap { groups[$0] },
                                          oomScoreAdjust: g.oomScoreAdjust ?? 0, limits: limits) { _ in }
        }
        var locks: [String: LabLock] = [:]
        var lockDomains: [String: ReclaimDomain] = [:]
        for l in scenario.locks ?? [] {
            let domain = cacheSpecs.first { $0.lock == l.name }?.domain.map(LabScopes.domain)
            locks[l.name] = LabLock(name: l.name, domain: domain)
            lockDomains[l.name] = domain
        }
        self.lockDomains = lockDomains
        siteBase = (ScenarioRun.runCounter.wrappingAdd(1, ordering: .relaxed).newValue % 4000) * 1_000_000
        var names: [UInt: String] = [:]
        for (w, worker) in scenario.workers.enumerated() {
            for o in worker.operations.indices { names[siteBase + Self.operationSite(worker: w, operation: o)] = "\(worker.name)/\(o + 1)" }
        }
        for (c, cache) in cacheSpecs.enumerated() { names[siteBase + Self.cacheFillSite(c)] = "\(cache.name)/fill" }
        for (e, event) in (scenario.events ?? []).enumerated() { names[siteBase + Self.eventSite(e)] = "events/\(e + 1) \(event.action)" }
        for (g, group) in (scenario.groups ?? []).enumerated() { names[siteBase + Self.exitSite(g)] = "\(group.name)/exit" }
        siteNames = names
        var caches: [String: LabCache] = [:]
        for c in cacheSpecs {
            caches[c.name] = try LabCache(spec: c, mm: mm, lock: c.lock.flatMap { locks[$0] }, group: c.group.flatMap { groups[$0] })
        }
        self.groups = groups
        self.locks = locks
        self.caches = caches
        hasTransactions = scenario.workers.contains { $0.operations.contains { $0.transaction == true } }
        start = monotonicSeconds()
        // A killed group's caches drop everything (the process is gone).
        let byGroup = caches.values
        let exitBytes = Dictionary((scenario.groups ?? []).compactMap { g in g.exitAllocation.map { (g.name, $0.bytes) } },
                                   uniquingKeysWith: { a, _ in a })
        let exitSites = Dictionary((scenario.groups ?? []).enumerated().map { ($1.name, siteBase + Self.exitSite($0)) },
                                   uniquingKeysWith: { a, _ in a })
        mm.addEventSink { [weak self, eventTimes, start, recursionFound, names, killedGroups, victimExits, exitThreads, semantics] event in
            let t = monotonicSeconds() - start
            switch event {
            case .reclaimRecursion(let e):
                if let site = e.allocationSite, site.file == "scenario", let name = names[site.line] {
                    recursionFound.withLock { _ = $0.insert(name) }
                }
            case .allocationStall: eventTimes.withLock { $0.append(RunReport.Marker(t: t, kind: .stall)) }
            case .oomVictimStuck: self?.victimStuckCount.wrappingAdd(1, ordering: .relaxed)
            case .oomKill(let kill):
                eventTimes.withLock { $0.append(RunReport.Marker(t: t, kind: .oomKill)) }
                killedGroups.withLock { _ = $0.insert(kill.victim) }
                let victimCaches = byGroup.filter { $0.group?.name == kill.victim }
                if let bytes = exitBytes[kill.victim], let site = exitSites[kill.victim], let group = victimCaches.first?.group,
                   let run = self {
                    // The victim must allocate before it can release (a log flush): on a thread
                    // of its own, not on the allocating thread that triggered the kill.
                    victimExits.withLock { $0[kill.victim] = .some(nil) }
                    let exit = LabThread { [weak run] in
                        guard let run else { return }
                        let mm = run.mm
                        let t0 = monotonicSeconds()
                        var policy = AllocationPolicy.standard
                        policy.reportsFailure = false
                        // Charged to the victim, its allocations get the .oomVictim reserve;
                        // under noVictimReserve they are ordinary requests.
                        if semantics != .noVictimReserve { policy.group = group }
                        var held: [UnsafeMutableRawPointer] = []
                        var remaining = bytes
                        while remaining > 0 && !run.abandon.load(ordering: .relaxed) && !run.stop.load(ordering: .relaxed) {
                            if let p = mm.allocate(byteCount: min(remaining, 64 << 10), policy: policy, file: "scenario", line: site) {
                                held.append(p)
                                remaining -= min(remaining, 64 << 10)
                            } else {
                                sleepSeconds(0.01)
                            }
                        }
                        for cache in victimCaches { cache.dropAll() }
                        for p in held { mm.deallocate(p) }
                        if remaining == 0 { victimExits.withLock { $0[kill.victim] = .some(monotonicSeconds() - t0) } }
                    }
                    exitThreads.withLock { $0.append(exit) }
                } else {
                    for cache in victimCaches { cache.dropAll() }
                }
            default: break
            }
        }
        for cache in caches.values { _ = mm.registerShrinker(cache) }
    }

    var now: Double { monotonicSeconds() - start }

    // MARK: Call sites
    // Every allocation of a run is made at a `line` of file "scenario" that
    // names what made it, so allocinfo and the reclaim-recursion checker name
    // the scenario's operations, not the runner's source lines.

    /// The `o`th operation of the `w`th worker (`<worker>/<o + 1>`).
    static func operationSite(worker w: Int, operation o: Int) -> UInt { UInt(w * 1000 + o + 1) }
    /// The initial fill of the `c`th cache (`<cache>/fill`).
    static func cacheFillSite(_ c: Int) -> UInt { 900_000 + UInt(c) }
    /// The allocations of the `e`th event (`events/<e + 1> <action>`).
    static func eventSite(_ e: Int) -> UInt { 800_000 + UInt(e) }
    /// The exit allocation of the `g`th group (`<group>/exit`).
    static func exitSite(_ g: Int) -> UInt { 700_000 + UInt(g) }

    /// The scenario's name for a call site of this run, if it is one.
    func siteName(_ site: CallSite) -> String? { site.file == "scenario" ? siteNames[site.line] : nil }

    func execute(progress: (@Sendable (CommitSemantics, Double) -> Void)?, inspect: ((MemorySystem) -> Void)?) -> RunReport {
        for (c, spec) in (scenario.caches ?? []).enumerated() {
            caches[spec.name]!.grow(count: spec.count, site: siteBase + Self.cacheFillSite(c))
        }
        residentAtStart = mm.statistics().residentBytes
        let runStart = now
        let duration = scenario.duration.value
        var threads: [LabThread] = []
        threads.append(LabThread { [self] in sample(until: runStart + duration) })
        for (w, worker) in scenario.workers.enumerated() {
            for t in 0..<(worker.threads ?? 1) {
                let seed = scenario.seed ^ (UInt64(w) << 32) ^ UInt64(t) &* 0x9E37_79B9
                threads.append(LabThread { [self] in work(worker, index: w, seed: seed) })
            }
        }
        if let events = scenario.events, !events.isEmpty {
            let ordered = events.enumerated().sorted { $0.element.at.value < $1.element.at.value }
            threads.append(LabThread { [self] in play(ordered.map { ($0.offset, $0.element) }, from: runStart) })
        }
        while now < runStart + duration {
            progress?(semantics, min(1, (now - runStart) / duration))
            sleepSeconds(min(0.1, max(0.001, runStart + duration - now)))
        }
        progress?(semantics, 1)
        let end = now
        stop.store(true, ordering: .relaxed)
        monitor?.stop()
        inspect?(mm)
        let atEnd = mm.statistics()
        let allocinfo = atEnd.allocationSites != nil ? atEnd.allocinfo(naming: siteName) : nil
        // Teardown: threads stuck in a deadlock are freed by dropping every cache
        // behind the shrinkers' locks (the rescue); what still does not stop is abandoned.
        var neededRescue = false
        var stuck = false
        for thread in threads where !thread.join(before: .now + .milliseconds(300)) {
            if !neededRescue {
                neededRescue = true
                for cache in caches.values { cache.dropAll() }
            }
            if !thread.join(before: .now + .seconds(10)) {
                stuck = true
                thread.abandon()
            }
        }
        for exit in exitThreads.withLock({ $0 }) where !exit.join(before: .now + .seconds(10)) { exit.abandon() }
        if stuck {
            abandon.store(true, ordering: .relaxed)
            // Threads still running use the system: keep it alive for the process's lifetime.
            _ = Unmanaged.passRetained(mm)
        }
        var report = makeReport(runStart: runStart, end: end, neededRescue: neededRescue)
        report.allocinfo = allocinfo
        for cache in caches.values { cache.dropAll() }
        return report
    }

    // MARK: Threads

    private func sample(until deadline: Double) {
        var lastDirect = 0, lastBackground = 0
        while !stop.load(ordering: .relaxed) {
            let s = mm.statistics()
            let t = now
            let progress = hasTransactions ? transactions.load(ordering: .relaxed) : operations.load(ordering: .relaxed)
            samples.withLock {
                $0.append(RunReport.Sample(t: t, freeBytes: s.freeBytes, limitBytes: s.limit, progress: progress))
            }
            groupUsage.withLock { usage in
                for g in s.groups {
                    var entry = usage[g.name] ?? (peak: 0, lowest: .max)
                    entry.peak = max(entry.peak, g.usage)
                    if g.usage > 0 || entry.peak > 0 { entry.lowest = min(entry.lowest, g.usage) }
                    usage[g.name] = entry
                }
            }
            // The last sample at the lowest limit: after reclaim has had its time there.
            lowestLimit.withLock { if s.limit <= $0.limit { $0 = (s.limit, s.residentBytes) } }
            let direct = s[counter: "direct_reclaim_runs"], background = s[counter: "background_reclaim_runs"]
            if direct > lastDirect { reclaimMarks.withLock { $0.append((t, true)) } }
            if background > lastBackground { reclaimMarks.withLock { $0.append((t, false)) } }
            lastDirect = direct
            lastBackground = background
            sleepSeconds(0.02)
        }
    }

    private func play(_ events: [(index: Int, event: Scenario.EventSpec)], from runStart: Double) {
        for (e, event) in events {
            let site = siteBase + Self.eventSite(e)
            while now < runStart + event.at.value {
                if stop.load(ordering: .relaxed) { return }
                sleepSeconds(min(0.01, runStart + event.at.value - now))
            }
            switch event.action {
            case "pressure-spike":
                // Takes `bytes` as far as failFast allows, and keeps taking what comes free
                // (every 5 ms) for its whole duration, as a competing workload does.
                var held: [UnsafeMutableRawPointer] = []
                var remaining = event.bytes!.bytes
                var spikePolicy = AllocationPolicy.failFast
                spikePolicy.group = event.group.flatMap { groups[$0] }
                spikePolicy.reportsFailure = false
                let until = now + (event.duration?.value ?? 1)
                var counted = false
                while now < until && !stop.load(ordering: .relaxed) {
                    while remaining > 0, !stop.load(ordering: .relaxed) {
                        let chunk = min(remaining, 64 << 10)
                        guard let p = mm.allocate(byteCount: chunk, policy: spikePolicy, file: "scenario", line: site) else {
                            if let g = event.group, !counted { groupFailures.withLock { $0[g, default: 0] += 1 } }
                            counted = true
                            break
                        }
                        p.storeBytes(of: 1, as: UInt8.self)
                        held.append(p)
                        remaining -= chunk
                    }
                    sleepSeconds(0.005)
                }
                for p in held { mm.deallocate(p) }
            case "set-limit":
                mm.setLimit(event.bytes!.bytes)
            case "psi-pressure":
                // One simulated PSI event now, then one every 250 ms for `duration`.
                let until = now + (event.duration?.value ?? 0)
                repeat {
                    pressure?.signal()
                    sleepSeconds(0.25)
                } while now < until && !stop.load(ordering: .relaxed)
            case "fragment-cache":
                caches[event.cache!]!.fragment()
            case "grow-cache":
                let cache = caches[event.cache!]!
                cache.grow(count: max(1, event.bytes!.bytes / cache.objectSize), site: site)
            default:
                for cache in caches.values where cache.group?.name == event.group { cache.dropAll() }
            }
        }
    }

    private func work(_ worker: Scenario.WorkerSpec, index w: Int, seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000)
        let measuredOnly = worker.operations.contains { $0.guarantee != nil }
        var next = monotonicSeconds()
        loop: while !stop.load(ordering: .relaxed) {
            for (o, op) in worker.operations.enumerated() {
                if stop.load(ordering: .relaxed) { break loop }
                if let rate = op.rate {
                    next += 1 / rate
                    let wait = next - monotonicSeconds()
                    if wait > 0 { sleepSeconds(wait) } else if wait < -1 { next = monotonicSeconds() }
                }
                perform(op, site: siteBase + UInt(w * 1000 + o + 1), rng: &rng, histogram: &histogram,
                        measure: !measuredOnly || op.guarantee != nil)
            }
        }
        latency.withLock { $0.add(histogram) }
    }

    private func perform(_ op: Scenario.OperationSpec, site: UInt, rng: inout SeededGenerator,
                         histogram: inout Histogram<UInt64>, measure: Bool) {
        var scope = AllocationScope.none
        for text in op.scopes ?? [] {
            // kernel2021: no NOFAIL scope existed.
            if semantics == .kernel2021 && (text == "retryForever" || text == "useReserves") { continue }
            scope = scope.union(try! LabScopes.parse(text))
        }
        if semantics == .noDirectReclaim && op.guarantee == "semantics" { scope = scope.union(.noDirectReclaim) }
        if semantics == .scopesAdded {
            for lock in op.locks ?? [] { if let domain = lockDomains[lock] { scope = scope.union(.excluding(domain)) } }
        }
        let locks = (op.locks ?? []).map { self.locks[$0]! }
        // A killed group's process is exiting: its caches stop growing.
        if let name = op.grow.flatMap({ caches[$0]?.group?.name }), killedGroups.withLock({ $0.contains(name) }) {
            sleepSeconds(0.001)
            return
        }
        withAllocationScope(scope) {
            withLocks(locks[...]) {
                var held: [UnsafeMutableRawPointer] = []
                var complete = true
                for _ in 0..<(op.count ?? 1) {
                    let size = rng.next(in: op.size.lower...op.size.upper)
                    let t0 = monotonicSeconds()
                    // A grouped cache's objects are charged to its group unless the operation names one.
                    let group = op.group.flatMap { groups[$0] } ?? op.grow.flatMap { caches[$0]?.group }
                    let p = allocate(size, op, group: group, from: op.grow.flatMap { caches[$0] }, site: site)
                    if measure { _ = histogram.record(UInt64(max(0, (monotonicSeconds() - t0) * 1e6))) }
                    guard let p else { complete = false; break }
                    p.storeBytes(of: UInt8(truncatingIfNeeded: size), as: UInt8.self)
                    held.append(p)
                }
                if let hold = op.hold?.value, hold > 0 { sleepSeconds(hold) }
                if let grow = op.grow.flatMap({ caches[$0] }) {
                    for p in held { grow.add(p) }
                } else {
                    for p in held { mm.deallocate(p) }
                }
                if complete {
                    operations.wrappingAdd(1, ordering: .relaxed)
                    if op.transaction == true || !hasTransactions {
                        if op.transaction == true { transactions.wrappingAdd(1, ordering: .relaxed) }
                        let t = now
                        progressTimes.withLock { $0.append(t) }
                    }
                }
            }
        }
    }

    private func withLocks(_ locks: ArraySlice<LabLock>, _ body: () -> Void) {
        guard let first = locks.first else { return body() }
        first.mutex.withLock { _ in withLocks(locks.dropFirst(), body) }
    }

    /// One allocation with the operation's policy, guarantee or the run's
    /// semantics: an object of `cache` for an operation that grows one, else `size` bytes.
    private func allocate(_ size: Int, _ op: Scenario.OperationSpec, group: MemoryGroup?, from cache: LabCache?,
                          site: UInt) -> UnsafeMutableRawPointer? {
        guard let group else { return allocate(size, op, charging: nil, from: cache, site: site) }
        // Charged: the policy's group for fallible calls; guaranteed calls take no policy,
        // so they are charged through a scope.
        let p = op.guarantee == nil
            ? allocate(size, op, charging: group, from: cache, site: site)
            : withAllocationScope(.charging(group)) { allocate(size, op, charging: nil, from: cache, site: site) }
        if p == nil { groupFailures.withLock { $0[group.name, default: 0] += 1 } }
        return p
    }

    /// `site` is the allocation's `line` in file "scenario": the operation, for reports.
    private func allocate(_ size: Int, _ op: Scenario.OperationSpec, charging group: MemoryGroup?, from cache: LabCache?,
                          site: UInt) -> UnsafeMutableRawPointer? {
        var policy: AllocationPolicy
        switch op.policy ?? "standard" {
        case "failFast": policy = .failFast
        case "retryWhileProgress": policy = .retryWhileProgress
        case "nonBlocking": policy = .nonBlocking
        case "atomic": policy = .atomic
        default: policy = .standard
        }
        switch op.placement ?? "contiguous" {
        case "virtual": policy.placement = .virtual
        case "automatic": policy.placement = .automatic
        default: policy.placement = .contiguous
        }
        policy.group = group
        var guarantee: CommitSemantics? = switch op.guarantee {
        case "retryForever": .retryForever
        case "useReserves": .useReserves
        case "semantics": semantics
        default: nil
        }
        switch semantics {
        case .kernel2021:
            if guarantee == .kernel2021 { guarantee = .useReserves }        // __GFP_NOFAIL
            // Explicit GFP_NOFS/NOIO: kvmalloc_node() fell back to kmalloc only.
            if policy.placement == .automatic && (op.scopes ?? []).contains(where: { $0.hasPrefix("excluding") }) {
                policy.placement = .contiguous
            }
        case .noDirectReclaim, .scopesAdded:
            if guarantee == semantics { guarantee = .retryForever }
        case .noVictimReserve:
            if guarantee == semantics { guarantee = .useReserves }
        case .naiveScope:
            if guarantee == .naiveScope { guarantee = .retryForever }
            // A guarantee scope upgrades everything in it, opportunistic calls included.
            if guarantee == nil, let upgrade = (op.scopes ?? []).first(where: { $0 == "retryForever" || $0 == "useReserves" }) {
                guarantee = upgrade == "useReserves" ? .useReserves : .retryForever
            }
        default: break
        }
        switch guarantee {
        case .retryForever?: return take(size, guarantee: .retryForever, from: cache, site: site)
        case .useReserves?: return take(size, guarantee: .useReserves, from: cache, site: site)
        case .retryLoop?:
            // XFS kmem_alloc (2021): retry a fallible allocation, sleeping 20 ms, for as long as it takes.
            var quiet = policy
            quiet.persistence = .standard
            quiet.blocking = true
            while true {
                if let p = take(size, policy: quiet, from: cache, site: site) { return p }
                failures.wrappingAdd(1, ordering: .relaxed)
                if abandon.load(ordering: .relaxed) { return nil }
                sleepSeconds(0.02)
            }
        case .kernel2021?, .naiveScope?, .noDirectReclaim?, .scopesAdded?, .noVictimReserve?:
            preconditionFailure("mapped above")
        case nil:
            let p = take(size, policy: policy, from: cache, site: site)
            if p == nil {
                failures.wrappingAdd(1, ordering: .relaxed)
                if op.policy == "atomic" { atomicFailures.wrappingAdd(1, ordering: .relaxed) }
            }
            return p
        }
    }

    /// A fallible request: an object of `cache`, or `size` bytes.
    private func take(_ size: Int, policy: AllocationPolicy, from cache: LabCache?, site: UInt) -> UnsafeMutableRawPointer? {
        if let cache { return cache.objects.allocate(policy: policy, file: "scenario", line: site) }
        return mm.allocate(byteCount: size, policy: policy, file: "scenario", line: site)
    }

    /// A guaranteed request: an object of `cache`, or `size` bytes.
    private func take(_ size: Int, guarantee: Guarantee, from cache: LabCache?, site: UInt) -> UnsafeMutableRawPointer {
        if let cache { return cache.objects.allocateGuaranteed(guarantee, file: "scenario", line: site) }
        return mm.allocateGuaranteed(byteCount: size, guarantee, file: "scenario", line: site)
    }

    // MARK: Report

    private func makeReport(runStart: Double, end: Double, neededRescue: Bool) -> RunReport {
        let s = mm.statistics()
        let hist = latency.withLock { $0 }
        let times = progressTimes.withLock { $0 }.filter { $0 <= end }.sorted()
        var gapStart = runStart, longest = 0.0, longestAt = runStart
        for t in times + [end] {
            if t - gapStart > longest { longest = t - gapStart; longestAt = gapStart }
            gapStart = t
        }
        let threshold = scenario.watchdog?.value ?? 2
        let tail = end - (times.last ?? runStart)
        let deadlocked = tail >= threshold
        let what = hasTransactions ? "transaction" : "operation"
        let verdict: String
        if deadlocked {
            verdict = "no \(what) completed in the last \(format1(tail)) s (from t = \(format1((times.last ?? runStart) - runStart)) s to the end)"
        } else if longest >= threshold {
            verdict = "stalled \(format1(longest)) s at t = \(format1(longestAt - runStart)) s, then recovered"
        } else {
            verdict = "no deadlock (longest gap \(format1(longest * 1000)) ms)"
        }
        var markers = eventTimes.withLock { $0 }.map { RunReport.Marker(t: $0.t - runStart, kind: $0.kind) }
        markers += reclaimMarks.withLock { $0 }.map {
            RunReport.Marker(t: $0.t - runStart, kind: $0.direct ? .directReclaim : .backgroundReclaim)
        }
        if deadlocked { markers.append(RunReport.Marker(t: (times.last ?? runStart) - runStart, kind: .deadlock)) }
        let timeline = samples.withLock { $0 }.filter { $0.t >= runStart && $0.t <= end }
            .map { RunReport.Sample(t: $0.t - runStart, freeBytes: $0.freeBytes, limitBytes: $0.limitBytes, progress: $0.progress) }
        let stallCount = markers.filter { $0.kind == .stall && $0.t <= end - runStart }.count
        let oomCount = markers.filter { $0.kind == .oomKill }.count
        // The sampler may miss a short dip; the allocator remembers its lowest point.
        let lowest = min(timeline.map(\.freeBytes).min() ?? s.freeBytes, s[counter: "nr_free_pages_lowest"] << MemorySystem.pageShift)
        let p50 = hist.totalCount > 0 ? Double(hist.valueAtPercentile(50)) : 0
        let p99 = hist.totalCount > 0 ? Double(hist.valueAtPercentile(99)) : 0
        var report = RunReport(
            semantics: semantics, seconds: end - runStart,
            transactions: transactions.load(ordering: .relaxed), operations: operations.load(ordering: .relaxed),
            latencyP50Microseconds: p50, latencyP99Microseconds: p99,
            latencyMaxMicroseconds: Double(hist.maxRecorded),
            stallReports: stallCount, oomKills: oomCount,
            atomicFailures: atomicFailures.load(ordering: .relaxed), allocationFailures: failures.load(ordering: .relaxed),
            lowestFreeBytes: lowest,
            minWatermarkBytes: s.watermarks.min, lowWatermarkBytes: s.watermarks.low, highWatermarkBytes: s.watermarks.high,
            reclaimMilliseconds: Double(s.pressure.some.totalMicroseconds) / 1000,
            directReclaims: s[counter: "direct_reclaim_runs"], backgroundReclaims: s[counter: "background_reclaim_runs"],
            deadlocked: deadlocked, verdict: verdict, longestGapSeconds: longest, neededRescue: neededRescue,
            timeline: timeline, markers: markers.sorted { $0.t < $1.t })
        report.progress = hasTransactions ? report.transactions : report.operations
        report.progressName = scenario.progressName
        let usage = groupUsage.withLock { $0 }
        let failed = groupFailures.withLock { $0 }
        report.groups = (scenario.groups ?? []).compactMap { spec in
            guard let g = groups[spec.name] else { return nil }
            let u = usage[spec.name] ?? (peak: 0, lowest: .max)
            let l = g.limits, e = g.events
            return RunReport.GroupSummary(
                name: spec.name, min: l.min, low: l.low, high: l.high, max: l.max,
                peakUsage: max(u.peak, g.usage), finalUsage: g.usage, lowestUsage: u.lowest == .max ? g.usage : u.lowest,
                events: ["low": e.low, "high": e.high, "max": e.max, "oom": e.oom, "oom_kill": e.oomKill],
                failures: failed[spec.name] ?? 0)
        }
        report.recursionSites = recursionFound.withLock { $0 }.sorted()
        let exits = victimExits.withLock { $0 }
        report.victimExits = exits.keys.sorted().map { RunReport.VictimExit(group: $0, seconds: exits[$0]!) }
        report.victimStuckReports = victimStuckCount.load(ordering: .relaxed)
        var needing: [String] = []
        for worker in scenario.workers {
            for (o, op) in worker.operations.enumerated() {
                var scope = AllocationScope.none
                for text in op.scopes ?? [] { scope = scope.union(try! LabScopes.parse(text)) }
                if (op.locks ?? []).contains(where: { lockDomains[$0].map { !scope.excludes($0) } ?? false }) {
                    needing.append("\(worker.name)/\(o + 1)")
                }
            }
        }
        report.sitesNeedingScope = needing.sorted()
        let limits = timeline.compactMap(\.limitBytes)
        if let first = limits.first, limits.contains(where: { $0 != first }) || monitor != nil {
            let lowest = lowestLimit.withLock { $0 }
            report.limit = RunReport.LimitSummary(start: first, lowest: limits.min() ?? first, end: s.limit,
                                                  pressureEvents: monitor?.events ?? 0,
                                                  residentAtStart: residentAtStart, residentAtLowest: lowest.resident)
        }
        return report
    }
}

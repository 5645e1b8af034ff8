// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

@Suite("Group limits: R8 max, R9 high, R10 min/low, per-object charging", .timeLimit(.minutes(1)))
struct GroupLimitTests {
    // MARK: Charging

    @Test("a charged 64-byte allocation charges 64 bytes (its size class), from kmalloc-cg-64, and its free uncharges")
    func perObjectCharge() throws {
        let mm = try makeBudgetSystem()
        let parent = mm.makeGroup(name: "tenant")
        let group = mm.makeGroup(name: "sessions", parent: parent)
        let a = try #require(mm.allocate(byteCount: 64, policy: charged(group)))
        let b = try #require(mm.allocate(byteCount: 100, policy: charged(group)))   // the 128-byte class
        #expect(group.usage == 64 + 128 && group.ownUsage == 64 + 128 && parent.usage == 64 + 128)
        let caches = mm.statistics().slabCaches
        #expect(caches.first { $0.name == "kmalloc-cg-64" }?.activeObjects == 1)
        #expect(caches.first { $0.name == "kmalloc-cg-128" }?.activeObjects == 1)
        #expect(caches.first { $0.name == "kmalloc-64" }?.activeObjects == 0)
        let c = try #require(withAllocationScope(.charging(group)) { mm.allocate(byteCount: 24) })  // 32-byte class
        #expect(group.usage == 64 + 128 + 32)
        mm.deallocate(a)
        mm.deallocate(b)
        mm.deallocate(c)
        #expect(group.usage == 0 && parent.usage == 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("a charged object of a program's own cache comes from its accounted twin, is freed through the cache, and uncharges")
    func objectCacheCharge() throws {
        let mm = try makeBudgetSystem { $0.hardeningAction = .report }
        let recorder = EventRecorder(mm)
        let group = mm.makeGroup(name: "tenant", limits: .init(max: 1 << 20))
        let inodes = try mm.makeObjectCache(name: "inode", size: 600, flags: [.reclaimable])
        let plain = try #require(inodes.allocate())
        let a = try #require(inodes.allocate(policy: charged(group)))
        let b = try #require(withAllocationScope(.charging(group)) { inodes.allocate() })
        #expect(group.usage == 2 * 600)
        let caches = mm.statistics().slabCaches
        #expect(caches.first { $0.name == "inode" }?.activeObjects == 1)
        #expect(caches.first { $0.name == "inode-cg" }?.activeObjects == 2)
        #expect(mm.statistics().reclaimableSlabBytes > 0)
        inodes.deallocate(a)
        inodes.deallocate(b)
        inodes.deallocate(plain)
        #expect(group.usage == 0)
        #expect(recorder.violations.isEmpty)
        // The twin is this cache's only: another cache's free of a twin object is still a wrong-cache violation.
        let other = try mm.makeObjectCache(name: "dentry", size: 600)
        let c = try #require(inodes.allocate(policy: charged(group)))
        other.deallocate(c)
        #expect(recorder.violations.map(\.kind) == [.wrongCache])
        inodes.deallocate(c)
        #expect(group.usage == 0)
        #expect(inodes.destroy() == 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("charged pages and kvmalloc areas charge their pages' bytes; a failed request leaves no charge")
    func pageAndAreaCharges() throws {
        let mm = try makeBudgetSystem()
        let group = mm.makeGroup(name: "g", limits: .init(max: 1 << 20))
        let page = try #require(mm.allocatePages(order: 1, policy: charged(group)))
        #expect(group.usage == 8192)
        let area = try #require(mm.allocate(byteCount: 100_000, policy: charged(group)))   // kvmalloc: one order-5 block
        #expect(group.usage == 8192 + 131_072)
        var virtualPolicy = charged(group)
        virtualPolicy.placement = .virtual
        let v = try #require(mm.allocate(byteCount: 10_000, policy: virtualPolicy))        // 3 pages
        #expect(group.usage == 8192 + 131_072 + 12_288)
        #expect(mm.allocate(byteCount: 2 << 20, policy: charged(group, .nonBlocking)) == nil)  // over max
        #expect(group.usage == 8192 + 131_072 + 12_288)
        mm.freePages(page, order: 1)
        mm.deallocate(area)
        mm.deallocate(v)
        #expect(group.usage == 0)
    }

    // MARK: R8

    @Test("R8: a fallible request at max fails (counts max and oom) and never charges past max; non-blocking fails at once")
    func maxFailsFallible() throws {
        let mm = try makeBudgetSystem()
        let recorder = EventRecorder(mm)
        let group = mm.makeGroup(name: "capped", limits: .init(max: 64 << 10))
        var held: [UnsafeMutableRawPointer] = []
        while let p = mm.allocate(byteCount: 4096, policy: charged(group, .nonBlocking)) { held.append(p) }
        #expect(held.count == 16 && group.usage == 64 << 10)
        let eventsAfterFill = group.events
        #expect(eventsAfterFill.max == 1 && eventsAfterFill.oom == 1)           // the non-blocking one that failed
        #expect(mm.allocate(byteCount: 4096, policy: charged(group)) == nil)   // .standard: reclaim, no victim, fail
        #expect(group.usage == 64 << 10)
        #expect(group.events.max > eventsAfterFill.max && group.events.oom > eventsAfterFill.oom)
        #expect(recorder.failures.contains { $0.reason.contains("group capped at its max") })
        #expect(mm.statistics()[counter: "max_fail"] >= 2)
        for p in held { mm.deallocate(p) }
        #expect(mm.allocate(byteCount: 4096, policy: charged(group)).map { mm.deallocate($0); return true } == true)
    }

    @Test("R8: at max, reclaim runs group-aware shrinkers for that subtree only, never with a nil group")
    func maxReclaimsSubtree() throws {
        let mm = try makeBudgetSystem()
        let tenant = mm.makeGroup(name: "tenant", limits: .init(max: 256 << 10))
        let child = mm.makeGroup(name: "tenant-child", parent: tenant)
        let other = mm.makeGroup(name: "other")
        let cache = GroupAwareCache(mm)
        let registration = mm.registerShrinker(cache)
        defer { registration.unregister(); cache.clear() }
        #expect(cache.fill(64, group: child) == 64)       // the whole 256 KiB of the tenant
        #expect(cache.fill(64, group: other) == 64)
        let p = try #require(mm.allocate(byteCount: 4096, policy: charged(tenant)))
        #expect(cache.count(of: child) < 64)               // reclaimed from the subtree
        #expect(cache.count(of: other) == 64)              // not from outside it
        #expect(!cache.askedFor.withLock { $0 }.contains("other"))
        #expect(cache.calledWithoutGroup.load(ordering: .relaxed) == 0)
        #expect(tenant.usage <= 256 << 10)
        #expect(mm.statistics()[counter: "group_reclaim_runs"] >= 1)
        mm.deallocate(p)
    }

    @Test("R8: the OOM handler runs restricted to the subtree at its max, and the request then succeeds")
    func maxInvokesSubtreeOOM() throws {
        let mm = try makeBudgetSystem()
        let killed = Locked<[String]>([])
        let outsiderCache = TestCache(mm, name: "outsider")
        let outsider = mm.makeGroup(name: "outsider", oomScoreAdjust: 1000, onOOMKill: { g in killed.withLock { $0.append(g.name) } })
        let tenant = mm.makeGroup(name: "tenant", limits: .init(max: 128 << 10))
        let worker = BackgroundWorker()
        let victimCache = TestCache(mm, name: "victim")
        let victim = mm.makeGroup(name: "victim", parent: tenant, onOOMKill: { g in
            killed.withLock { $0.append(g.name) }
            worker.run { victimCache.clear() }
        })
        var victimPolicy = AllocationPolicy.nonBlocking
        victimPolicy.group = victim
        for _ in 0..<32 { if let o = mm.allocate(byteCount: 4096, policy: victimPolicy) { victimCache.adopt(o) } }
        var outsiderPolicy = AllocationPolicy.nonBlocking
        outsiderPolicy.group = outsider
        for _ in 0..<64 { if let o = mm.allocate(byteCount: 4096, policy: outsiderPolicy) { outsiderCache.adopt(o) } }
        #expect(tenant.usage == 128 << 10)
        let p = mm.allocate(byteCount: 4096, policy: charged(tenant))
        worker.join()
        #expect(p != nil)
        #expect(killed.withLock { $0 } == ["victim"])        // never the outsider, whatever its score
        #expect(tenant.events.oomKill == 1 && victim.events.oomKill == 1 && outsider.events.oomKill == 0)
        #expect(tenant.events.oom >= 1)
        if let p { mm.deallocate(p) }
        outsiderCache.clear()
    }

    @Test("R8: .retryForever at max waits, reports a stall naming the group, and succeeds once the group frees")
    func maxRetryForeverWaits() throws {
        let mm = try makeBudgetSystem()
        let recorder = EventRecorder(mm)
        let group = mm.makeGroup(name: "journal", limits: .init(max: 64 << 10))
        var held: [UnsafeMutableRawPointer] = []
        while let p = mm.allocate(byteCount: 4096, policy: charged(group, .nonBlocking)) { held.append(p) }
        let got = Atomic<Int>(0)
        let waiter = BackgroundThread {
            let p = withAllocationScope(.charging(group)) { mm.allocateGuaranteed(byteCount: 4096, .retryForever) }
            got.store(Int(bitPattern: p), ordering: .relaxed)
        }
        sleep(milliseconds: 300)
        #expect(got.load(ordering: .relaxed) == 0)          // still waiting: never past max, never nil
        #expect(group.usage == 64 << 10)
        mm.deallocate(held.removeLast())
        #expect(watchdog("the waiting retryForever request") { waiter.join() })
        #expect(got.load(ordering: .relaxed) != 0)
        #expect(group.usage == 64 << 10)
        let stalls = recorder.events.compactMap { if case .allocationStall(let s) = $0 { return s } else { return nil } }
        #expect(stalls.contains { $0.group == "journal" && $0.description.contains("max of group journal") })
        #expect(mm.statistics()[counter: "max_force_charge"] == 0)
        mm.deallocate(UnsafeMutableRawPointer(bitPattern: got.load(ordering: .relaxed))!)
        for p in held { mm.deallocate(p) }
    }

    @Test("R8: .useReserves at max with no victim force-charges past max, counted; inside reclaim too")
    func maxForceCharges() throws {
        let mm = try makeBudgetSystem()
        let group = mm.makeGroup(name: "nofail", oomScoreAdjust: -1000, limits: .init(max: 64 << 10))
        var held: [UnsafeMutableRawPointer] = []
        while let p = mm.allocate(byteCount: 4096, policy: charged(group, .nonBlocking)) { held.append(p) }
        let maxBefore = group.events.max
        let p = withAllocationScope(.charging(group)) { mm.allocateGuaranteed(byteCount: 4096, .useReserves) }
        #expect(group.usage == (64 << 10) + 4096)
        #expect(group.events.max > maxBefore)
        #expect(mm.statistics()[counter: "max_force_charge"] == 1)
        let q = withAllocationScope(.reclaiming) { mm.allocate(byteCount: 4096, policy: charged(group, .nonBlocking)) }
        #expect(q != nil)                                   // PF_MEMALLOC force-charge
        #expect(mm.statistics()[counter: "max_force_charge"] == 2)
        #expect(mm.allocate(byteCount: 4096, policy: charged(group, .atomic)) == nil)  // atomic is no exception
        mm.deallocate(p)
        if let q { mm.deallocate(q) }
        for p in held { mm.deallocate(p) }
        #expect(group.usage == 0)
    }

    @Test("R8: a child's charge is stopped by its parent's max; usage is charged up the tree")
    func hierarchicalMax() throws {
        let mm = try makeBudgetSystem()
        let parent = mm.makeGroup(name: "parent", limits: .init(max: 32 << 10))
        let child = mm.makeGroup(name: "child", parent: parent, limits: .init(max: 1 << 20))
        var held: [UnsafeMutableRawPointer] = []
        while let p = mm.allocate(byteCount: 4096, policy: charged(child, .nonBlocking)) { held.append(p) }
        #expect(held.count == 8 && parent.usage == 32 << 10 && child.usage == 32 << 10)
        // Counted on the group at its max and up the tree (hierarchical), not down to the child.
        #expect(parent.events.max == 1 && child.events.max == 0)
        for p in held { mm.deallocate(p) }
    }

    // MARK: R9

    @Test("R9: over high a blocking request is throttled and counted, never fails; non-blocking ones are not throttled")
    func highThrottles() throws {
        let mm = try makeBudgetSystem()
        let group = mm.makeGroup(name: "bursty", limits: .init(high: 40 << 10))
        var held: [UnsafeMutableRawPointer] = []
        for _ in 0..<10 { held.append(try #require(mm.allocate(byteCount: 4096, policy: charged(group, .nonBlocking)))) }
        #expect(group.events.high == 0)                     // non-blocking: charged, not throttled, not counted
        let clock = ContinuousClock()
        let start = clock.now
        let p = try #require(mm.allocate(byteCount: 4096, policy: charged(group)))  // 44 KiB: 10 % over high
        let took = clock.now - start
        #expect(group.events.high == 1)
        #expect(took >= .milliseconds(500))                 // 4 KiB over 40 KiB high: 1 s
        #expect(mm.statistics()[counter: "high_throttle"] == 1 && mm.statistics()[counter: "high_throttle_ms"] >= 500)
        #expect(group.events.oom == 0 && group.events.max == 0)
        mm.deallocate(p)
        for p in held { mm.deallocate(p) }
    }

    @Test("R9: over high, reclaim from the group comes first and can spare the request its throttle")
    func highReclaimsFirst() throws {
        let mm = try makeBudgetSystem()
        let group = mm.makeGroup(name: "cachey", limits: .init(high: 64 << 10))
        let cache = GroupAwareCache(mm)
        let registration = mm.registerShrinker(cache)
        defer { registration.unregister(); cache.clear() }
        #expect(cache.fill(16, group: group) == 16)
        let p = try #require(mm.allocate(byteCount: 4096, policy: charged(group)))
        #expect(group.events.high == 1)
        #expect(cache.count(of: group) < 16)
        #expect(group.usage <= 64 << 10)
        #expect(mm.statistics()[counter: "high_throttle_ms"] == 0)
        mm.deallocate(p)
    }

    // MARK: R10

    @Test("R10: global reclaim never takes a group below its min, takes from below low only when nothing else is left, and counts low")
    func minAndLowProtect() throws {
        let mm = try makeBudgetSystem()
        let guarded = mm.makeGroup(name: "guarded", limits: .init(min: 1 << 20))
        let preferred = mm.makeGroup(name: "preferred", limits: .init(low: 1 << 20))
        let plain = mm.makeGroup(name: "plain")
        let cache = GroupAwareCache(mm)
        let registration = mm.registerShrinker(cache)
        defer { registration.unregister(); cache.clear() }
        #expect(cache.fill(128, group: guarded) == 128)     // 512 KiB, below its 1 MiB min
        #expect(cache.fill(128, group: preferred) == 128)   // 512 KiB, below its 1 MiB low
        #expect(cache.fill(128, group: plain) == 128)
        // Proactive reclaim of 256 KiB: only the unprotected group gives.
        _ = mm.reclaim(bytes: 256 << 10)
        #expect(cache.count(of: plain) < 128)
        #expect(cache.count(of: guarded) == 128 && cache.count(of: preferred) == 128)
        #expect(preferred.events.low == 0)
        // Ask for more than the unprotected group holds: low gives way, min never.
        _ = mm.reclaim(bytes: 4 << 20)
        #expect(cache.count(of: plain) == 0)
        #expect(cache.count(of: preferred) < 128)
        #expect(preferred.events.low >= 1)
        #expect(cache.count(of: guarded) == 128)
        #expect(cache.calledWithoutGroup.load(ordering: .relaxed) == 0)
    }

    @Test("R10: effective protection is capped by the parent and shared in proportion when children overcommit it")
    func effectiveProtection() throws {
        let mm = try makeBudgetSystem()
        let parent = mm.makeGroup(name: "p", limits: .init(min: 64 << 10))
        let a = mm.makeGroup(name: "a", parent: parent, limits: .init(min: 1 << 20))
        let b = mm.makeGroup(name: "b", parent: parent, limits: .init(min: 1 << 20))
        let cache = GroupAwareCache(mm)
        defer { cache.clear() }
        cache.fill(16, group: a)   // 64 KiB each: together 128 KiB claimed under a 64 KiB parent min
        cache.fill(16, group: b)
        let protection = GroupProtection(groups: [parent, a, b])
        // The parent is above its own min (128 KiB > 64 KiB): unprotected; the children get 32 KiB each, below their usage.
        #expect(protection.protection(of: parent) == .none)
        #expect(protection.protection(of: a) == .none && protection.protection(of: b) == .none)
        let alone = mm.makeGroup(name: "alone", limits: .init(min: 1 << 20))
        cache.fill(4, group: alone)
        #expect(GroupProtection(groups: [alone]).protection(of: alone) == .min)
    }

    // MARK: Coherence and removal

    @Test("incoherent limits: setLimits throws and keeps the old ones; makeGroup reports and creates the group without limits")
    func incoherentLimits() throws {
        let mm = try makeBudgetSystem()
        let recorder = EventRecorder(mm)
        let g = mm.makeGroup(name: "g", limits: .init(high: 2 << 20, max: 1 << 20))
        #expect(g.limits == MemoryLimits())
        #expect(recorder.invalidRequests.contains { $0.reason.contains("high 2097152 is above max 1048576") })
        try mm.setLimits(.init(low: 4096, max: 1 << 20), for: g)
        for bad in [MemoryLimits(min: -1), MemoryLimits(min: 2 << 20, max: 1 << 20), MemoryLimits(high: -5), MemoryLimits(max: -1)] {
            #expect {
                try mm.setLimits(bad, for: g)
            } throws: { ($0 as? MemoryGroupError)?.code == .incoherentLimits }
        }
        #expect(g.limits == MemoryLimits(low: 4096, max: 1 << 20))
        let other = try makeBudgetSystem()
        #expect { try other.setLimits(.init(), for: g) } throws: { ($0 as? MemoryGroupError)?.code == .foreignGroup }
        try mm.removeGroup(g)
        #expect { try mm.setLimits(.init(), for: g) } throws: { ($0 as? MemoryGroupError)?.code == .alreadyRemoved }
    }

    @Test("a max set below usage is accepted and reclaims the group down to it at once")
    func maxBelowUsageReclaims() throws {
        let mm = try makeBudgetSystem()
        let g = mm.makeGroup(name: "shrinking")
        let cache = GroupAwareCache(mm)
        let registration = mm.registerShrinker(cache)
        defer { registration.unregister(); cache.clear() }
        cache.fill(64, group: g)
        try mm.setLimits(.init(max: 128 << 10), for: g)
        #expect(g.usage <= 128 << 10)
        #expect(g.limits.max == 128 << 10)
    }

    @Test("memory.events and limits appear in statistics().groups and groupinfo")
    func statisticsShowLimits() throws {
        let mm = try makeBudgetSystem()
        let parent = mm.makeGroup(name: "svc", limits: .init(low: 8192, max: 16384))
        let child = mm.makeGroup(name: "cache", parent: parent)
        _ = mm.allocate(byteCount: 32768, policy: charged(child, .nonBlocking))
        let s = mm.statistics()
        let entry = try #require(s.groups.first { $0.name == "cache" })
        #expect(entry.parent == "svc" && entry.events.max == 0)   // counted on the group at its max, and up
        #expect(s.groups.first { $0.name == "svc" }?.events.max == 1)
        #expect(s.groupinfo.contains("svc memory.max 16384"))
        #expect(s.groupinfo.contains("svc memory.events low 0 high 0 max 1 oom 1 oom_kill 0"))
        #expect(s.groupinfo.contains("svc/cache memory.events low 0 high 0 max 0 oom 0 oom_kill 0"))
    }
}

extension TestCache {
    /// Takes ownership of an object allocated elsewhere.
    func adopt(_ p: UnsafeMutableRawPointer) {
        p.storeBytes(of: 0xCAC4E, as: UInt64.self)
        adoptRaw(UInt(bitPattern: p))
    }
}

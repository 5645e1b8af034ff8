// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

@Suite("R11: the process limit", .timeLimit(.minutes(1)))
struct ProcessLimitTests {
    @Test("the limit defaults to capacity; setLimit clamps to 1 MiB…capacity")
    func clamps() throws {
        let mm = try makeBudgetSystem()
        #expect(mm.limit == mm.configuration.capacity)
        mm.setLimit(1)
        #expect(mm.limit == 1 << 20)
        mm.setLimit(.max)
        #expect(mm.limit == mm.configuration.capacity)
        mm.setLimit(-5)
        #expect(mm.limit == 1 << 20)
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.limit = 0
        #expect { try MemorySystem(config) } throws: { ($0 as? ConfigurationError)?.code == .limit }
        config.limit = 8 << 20
        config.logsEvents = false
        #expect(try MemorySystem(config).limit == 8 << 20)
    }

    @Test("lowering the limit takes effect at once: free is limit − used, watermarks come from the limit, requests past it fail; raising gives memory back")
    func takesEffectAtOnce() throws {
        let mm = try makeBudgetSystem(capacity: 64 << 20)
        let before = fillPages(mm)
        let usedAtCapacity = before.count
        for p in before { mm.freePages(p, order: 0) }
        mm.drainPerThreadLists()
        mm.setLimit(16 << 20)
        let s = mm.statistics()
        #expect(s.limit == 16 << 20)
        #expect(s.freeBytes <= 16 << 20 && s.freeBytes > 15 << 20)
        #expect(mm.watermarks == Watermarks.derived(capacity: 16 << 20))
        #expect(s.meminfo.contains("MemLimit:          16384 kB"))
        let under = fillPages(mm)
        #expect(under.count < usedAtCapacity / 3)
        #expect(under.count * pageSize <= 16 << 20)
        #expect(mm.allocate(byteCount: 4 << 20, policy: .nonBlocking) == nil)
        mm.setLimit(64 << 20)
        let more = fillPages(mm)
        #expect(more.count > 0 && under.count + more.count >= usedAtCapacity - 64)
        for p in under + more { mm.freePages(p, order: 0) }
        #expect(mm._invariantViolations() == [])
    }

    @Test("lowering the limit returns free memory beyond it to the OS")
    func returnsMemory() throws {
        let mm = try makeBudgetSystem(capacity: 64 << 20) { $0.releaseOrder = nil }
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<12 {
            let p = try #require(mm.allocatePages(order: 10))
            p.initializeMemory(as: UInt8.self, repeating: 1, count: 4 << 20)
            blocks.append(p)
        }
        for p in blocks { mm.freePages(p, order: 10) }
        let resident = mm.statistics().residentBytes
        #expect(resident >= 40 << 20)
        mm.setLimit(8 << 20)
        let after = mm.statistics()
        #expect(after.residentBytes <= 9 << 20)
        #expect(after.releasedBytes >= (64 - 8) << 20)
    }

    @Test("below usage, background reclaim brings usage under the limit through the shrinkers")
    func backgroundReclaimsToLimit() throws {
        let mm = try makeBudgetSystem(capacity: 64 << 20) { $0.backgroundReclaim = true }
        let cache = TestCache(mm)
        let registration = mm.registerShrinker(cache)
        defer { registration.unregister(); cache.clear() }
        #expect(cache.fill(8000) == 8000)              // 31 MiB of cache
        mm.setLimit(16 << 20)
        var ok = false
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let s = mm.statistics()
            if s.freeBytes >= s.watermarks.low { ok = true; break }
            sleep(milliseconds: 10)
        }
        #expect(ok, "usage did not come under the 16 MiB limit within 10 s")
        #expect(cache.count * 4096 < 16 << 20)
        #expect(cache.scanCount >= 1)
    }

    @Test("below usage with nothing reclaimable, the OOM handler runs; with no victim, one overLimit report")
    func overLimitOOM() throws {
        let mm = try makeBudgetSystem(capacity: 64 << 20) { $0.backgroundReclaim = true }
        let recorder = EventRecorder(mm)
        let killed = Atomic<Int>(0)
        let cache = TestCache(mm, name: "unreclaimable")
        let group = mm.makeGroup(name: "hog", onOOMKill: { _ in
            killed.wrappingAdd(1, ordering: .relaxed)
        })
        var policy = AllocationPolicy.nonBlocking
        policy.group = group
        var held: [UnsafeMutableRawPointer] = []
        for _ in 0..<6000 { if let p = mm.allocate(byteCount: 4096, policy: policy) { held.append(p) } }
        mm.setLimit(8 << 20)
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline && killed.load(ordering: .relaxed) == 0 { sleep(milliseconds: 10) }
        #expect(killed.load(ordering: .relaxed) >= 1)
        // The victim never releases and no other group exists: reported, once.
        let reportDeadline = ContinuousClock.now + .seconds(10)
        func overLimitReports() -> Int {
            recorder.events.filter { if case .overLimit = $0 { return true } else { return false } }.count
        }
        while ContinuousClock.now < reportDeadline && overLimitReports() == 0 { sleep(milliseconds: 20) }
        #expect(overLimitReports() == 1)
        _ = cache
        for p in held { mm.deallocate(p) }
    }

    @Test("a charged group and the process limit: the limit bounds all groups together")
    func limitActsAsRoot() throws {
        let mm = try makeBudgetSystem(capacity: 32 << 20)
        mm.setLimit(4 << 20)
        let g = mm.makeGroup(name: "big-max", limits: .init(max: 1 << 30))
        var held: [UnsafeMutableRawPointer] = []
        while let p = mm.allocate(byteCount: 4096, policy: charged(g, .nonBlocking)) { held.append(p) }
        #expect(g.usage <= 4 << 20)
        for p in held { mm.deallocate(p) }
    }
}

@Suite("Group limits under two threads", .timeLimit(.minutes(1)))
struct GroupLimitStressTests {
    @Test("two threads charging one group: usage never exceeds max except by counted force-charges")
    func maxHoldsUnderStress() throws {
        let mm = try makeBudgetSystem(capacity: 32 << 20)
        let parent = mm.makeGroup(name: "tenant", limits: .init(max: 256 << 10))
        let children = [mm.makeGroup(name: "a", parent: parent), mm.makeGroup(name: "b", parent: parent)]
        let stop = Atomic<Bool>(false)
        let worst = Atomic<Int>(0)
        let sampler = BackgroundThread {
            while !stop.load(ordering: .relaxed) {
                let u = parent.usage
                if u > worst.load(ordering: .relaxed) { worst.store(u, ordering: .relaxed) }
            }
        }
        let forced = Atomic<Int>(0)
        let finished = watchdog("two threads charging one group", seconds: 50) {
            runThreads(2) { t in
                var rng = SeededGenerator(seed: UInt64(t + 1))
                var held: [(UnsafeMutableRawPointer, Int)] = []
                for i in 0..<8_000 {
                    let size = [16, 64, 200, 1000, 4096, 9000][Int(rng.next() % 6)]
                    var policy = charged(children[t], i % 3 == 0 ? .nonBlocking : .failFast)
                    policy.reportsFailure = false
                    if i % 997 == 0 {
                        let p = withAllocationScope(.charging(children[t])) { mm.allocateGuaranteed(byteCount: 512, .useReserves) }
                        forced.wrappingAdd(512, ordering: .relaxed)
                        held.append((p, 512))
                    } else if let p = mm.allocate(byteCount: size, policy: policy) {
                        held.append((p, size))
                    }
                    if held.count > 64 || (rng.next() % 3 == 0 && !held.isEmpty) {
                        let k = Int(rng.next() % UInt64(held.count))
                        mm.deallocate(held.remove(at: k).0)
                    }
                }
                for (p, _) in held { mm.deallocate(p) }
            }
        }
        stop.store(true, ordering: .relaxed)
        sampler.join()
        #expect(finished)
        let forceCharges = mm.statistics()[counter: "max_force_charge"]
        // Only the useReserves calls may take it past max, each by at most one 512-byte object.
        #expect(worst.load(ordering: .relaxed) <= (256 << 10) + forceCharges * 512)
        #expect(parent.usage == 0 && children.allSatisfy { $0.usage == 0 })
        #expect(parent.events.max > 0)
        #expect(mm._invariantViolations() == [])
    }
}

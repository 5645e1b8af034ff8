// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Glibc
import Synchronization
import Testing

/// The charged fast path (`allocateChargedObject`): a kmalloc-sized request
/// with `policy.group` pops the accounted twin's magazine and charges the
/// group when that needs neither reclaim nor throttling; its free takes the
/// slow path, which uncharges the group recorded in the slab's group vector.
/// Every case it refuses must leave the charge and the magazine as they were.
@Suite("Charged fast path: accounted twins on the magazines", .timeLimit(.minutes(1)))
struct ChargedFastPathTests {
    /// A system whose kmalloc-cg-64 magazine on this thread is warm (one
    /// charged request through the slow path refills it).
    private func warmSystem() throws -> (MemorySystem, EventRecorder) {
        let mm = try makeBudgetSystem { $0.hardeningAction = .report }
        let recorder = EventRecorder(mm)
        let warmer = mm.makeGroup(name: "warmer")
        let p = try #require(mm.allocate(byteCount: 64, policy: charged(warmer)))
        mm.deallocate(p)
        #expect(warmer.usage == 0)
        return (mm, recorder)
    }

    @Test("once the twin's magazine is warm, charged requests come from it, charged exactly up the hierarchy; frees uncharge")
    func servesAndUncharges() throws {
        let (mm, recorder) = try warmSystem()
        let tenant = mm.makeGroup(name: "tenant")
        let sessions = mm.makeGroup(name: "sessions", parent: tenant)
        let a = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(sessions)), "a warm magazine missed")
        let b = try #require(mm.allocateChargedObject(byteCount: 50, policy: charged(tenant)))
        #expect(sessions.usage == 64 && sessions.ownUsage == 64)
        #expect(tenant.usage == 128 && tenant.ownUsage == 64)
        #expect(mm.usableSize(of: a) == 64)
        mm.deallocate(a)
        #expect(sessions.usage == 0 && tenant.usage == 64)
        // The slot is reused at once (the magazine is last in, first out): its next charge is its own.
        let c = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(tenant)))
        #expect(c == a)
        mm.deallocate(c)
        mm.deallocate(b)
        #expect(sessions.usage == 0 && tenant.usage == 0 && tenant.ownUsage == 0)
        // Zeroed requests are zeroed.
        var zeroing = charged(tenant)
        zeroing.zeroed = true
        let dirty = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(tenant)))
        dirty.initializeMemory(as: UInt8.self, repeating: 0xAB, count: 64)
        mm.deallocate(dirty)
        let clean = try #require(mm.allocateChargedObject(byteCount: 64, policy: zeroing))
        #expect(UnsafeRawBufferPointer(start: clean, count: 64).allSatisfy { $0 == 0 })
        mm.deallocate(clean)
        #expect(tenant.usage == 0)
        #expect(recorder.violations.isEmpty)
        #expect(mm._invariantViolations() == [])
    }

    @Test("it refuses, charging nothing and keeping the object, at a max, over a high, for a removed group and inside a charging token")
    func refusesWithoutSideEffects() throws {
        let (mm, _) = try warmSystem()
        let index = SizeClass.index(forBytes: 64) + kmallocClassCount
        let cached = { mm.slab.magazinesForCurrentThread().count(index) }
        let before = cached()
        #expect(before > 0)

        let capped = mm.makeGroup(name: "capped", limits: .init(max: 100))
        let first = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(capped)))
        #expect(mm.allocateChargedObject(byteCount: 64, policy: charged(capped)) == nil, "served past max")
        #expect(capped.usage == 64 && cached() == before - 1)
        // The slow path then applies R8 (non-blocking: fail at once, counted).
        #expect(mm.allocate(byteCount: 64, policy: charged(capped, .nonBlocking)) == nil)
        #expect(mm.statistics().slowPath.maxFailures == 1)
        mm.deallocate(first)

        let parent = mm.makeGroup(name: "parent", limits: .init(high: 64))
        let child = mm.makeGroup(name: "child", parent: parent)
        let second = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(child)))  // at high, not above
        #expect(mm.allocateChargedObject(byteCount: 64, policy: charged(child)) == nil, "served above an ancestor's high")
        #expect(child.usage == 64 && parent.usage == 64 && cached() == before - 1)
        mm.deallocate(second)

        let gone = mm.makeGroup(name: "gone")
        try mm.removeGroup(gone)
        #expect(mm.allocateChargedObject(byteCount: 64, policy: charged(gone)) == nil)

        let scoped = mm.makeGroup(name: "scoped")
        let token = AllocationScope.enter(.charging(scoped))
        #expect(mm.allocateChargedObject(byteCount: 64, policy: charged(scoped)) == nil, "served on a closed fast path")
        token.exit()
        #expect(scoped.usage == 0 && cached() == before)
        #expect(mm._invariantViolations() == [])
    }

    @Test("a program cache's charged requests use its twin's magazine once the twin exists; frees through the cache uncharge")
    func objectCacheTwin() throws {
        let mm = try makeBudgetSystem { $0.hardeningAction = .report }
        let recorder = EventRecorder(mm)
        let group = mm.makeGroup(name: "tenant", limits: .init(max: 1 << 20))
        let inodes = try mm.makeObjectCache(name: "inode", size: 600)
        #expect(mm.slab.existingTwin(of: inodes.index) == nil)
        let first = try #require(inodes.allocate(policy: charged(group)))   // makes inode-cg, through the slow path
        let twin = try #require(mm.slab.existingTwin(of: inodes.index))
        #expect(mm.slab.cache(twin).name == "inode-cg")
        let second = try #require(SlowPath.allocateChargedObject(index: twin, policy: charged(group), slab: mm.slab),
                                  "the twin's magazine missed after a refill")
        let third = try #require(inodes.allocate(policy: charged(group)))
        #expect(group.usage == 3 * 600)
        for p in [first, second, third] { inodes.deallocate(p) }
        #expect(group.usage == 0)
        #expect(recorder.violations.isEmpty)
        #expect(inodes.destroy() == 0)
        // A destroyed cache's twin serves nothing: its requests go to the slow path, which reports them.
        #expect(SlowPath.allocateChargedObject(index: twin, policy: charged(group), slab: mm.slab) == nil)
        #expect(mm._invariantViolations() == [])
    }

    @Test("frees past a full magazine take the full path, which drains and still uncharges each object once")
    func fullMagazine() throws {
        let mm = try makeBudgetSystem(capacity: 64 << 20)
        let group = mm.makeGroup(name: "tenant")
        let objects = (0..<3000).map { _ in mm.allocate(byteCount: 16, policy: charged(group))! }
        #expect(group.usage == 3000 * 16)
        for p in objects { mm.deallocate(p) }   // the kmalloc-cg-16 magazine holds 1024
        #expect(group.usage == 0 && group.ownUsage == 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("a double free of a charged object is reported and uncharges once")
    func doubleFree() throws {
        let (mm, recorder) = try warmSystem()
        let group = mm.makeGroup(name: "tenant")
        let p = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(group)))
        let keep = try #require(mm.allocateChargedObject(byteCount: 64, policy: charged(group)))
        mm.deallocate(p)
        mm.deallocate(p)
        #expect(recorder.violations.map(\.kind) == [.doubleFree])
        #expect(group.usage == 64, "the second free uncharged again")
        mm.deallocate(keep)
        #expect(group.usage == 0)
    }

    @Test("charged objects freed by another thread uncharge their own groups: two threads, each freeing the other's")
    func crossThreadFrees() throws {
        let mm = try makeBudgetSystem()
        let groups = [mm.makeGroup(name: "a"), mm.makeGroup(name: "b")]
        let rounds = 200, batch = 64
        // Each round, each thread allocates a batch charged to its group and hands it to the other to free.
        let handoff = [Locked<[UInt]>([]), Locked<[UInt]>([])]
        let failures = Atomic<Int>(0)
        runThreads(2) { t in
            let policy = charged(groups[t])
            for _ in 0..<rounds {
                var mine: [UInt] = []
                for k in 0..<batch {
                    guard let p = mm.allocate(byteCount: [16, 96, 192, 500, 3000][k % 5], policy: policy) else {
                        failures.wrappingAdd(1, ordering: .relaxed)
                        continue
                    }
                    mine.append(UInt(bitPattern: p))
                }
                handoff[1 - t].withLock { $0 += mine }
                let theirs = handoff[t].withLock { list -> [UInt] in defer { list = [] }; return list }
                for p in theirs { mm.deallocate(UnsafeMutableRawPointer(bitPattern: p)!) }
            }
        }
        for list in handoff {
            for p in list.withLock({ $0 }) { mm.deallocate(UnsafeMutableRawPointer(bitPattern: p)!) }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(groups.allSatisfy { $0.usage == 0 && $0.ownUsage == 0 }, "\(groups.map(\.usage))")
        #expect(mm._invariantViolations() == [])
    }
}

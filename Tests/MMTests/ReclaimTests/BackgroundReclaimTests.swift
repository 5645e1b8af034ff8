// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

@Suite("Background reclaimer", .timeLimit(.minutes(1)))
struct BackgroundReclaimTests {
    func system() throws -> MemorySystem {
        try makeExactSystem { $0.backgroundReclaim = true }
    }

    @Test("woken below low, it reclaims until free memory is above high")
    func wakesAndRefills() throws {
        let mm = try system()
        let cache = TestCache(mm)
        _ = mm.registerShrinker(cache)
        cache.fill(1000, policy: .nonBlocking)  // stops at min (256 free), crossing low: wakes it
        let deadline = ContinuousClock.now + .seconds(10)
        // Free memory rises during the pass; its counter moves when the pass returns.
        while (mm.statistics().freeBytes / pageSize <= 384 || mm.statistics()[counter: "background_reclaim_runs"] == 0)
                && ContinuousClock.now < deadline { sleep(milliseconds: 5) }
        let stats = mm.statistics()
        #expect(stats.freeBytes / pageSize > 384)
        #expect(stats[counter: "background_reclaim_runs"] >= 1)
        #expect(stats[counter: "background_wakeups"] >= 1)
        #expect(stats[counter: "direct_reclaim_runs"] == 0)
    }

    @Test("a restricted request waits for it: the reclaimer runs the shrinker the request may not")
    func servesRestricted() throws {
        let mm = try system()
        let cache = TestCache(mm, domain: .filesystem)
        _ = mm.registerShrinker(cache)
        cache.fill(5000, policy: .atomic)
        let got = Atomic<Bool>(false)
        watchdog("a guaranteed request in an excluding(.filesystem) scope") {
            let p = withAllocationScope(.excluding(.filesystem)) { mm.allocateGuaranteed(byteCount: 4096) }
            got.store(true, ordering: .relaxed)
            mm.deallocate(p)
        }
        let ok = got.load(ordering: .relaxed)
        #expect(ok)
        #expect(cache.scanCount > 0)
        // The request itself may run direct reclaim, but never this shrinker: only the
        // background reclaimer (unrestricted) may.
        #expect(cache.scansFromExcludingContext.load(ordering: .relaxed) == 0)
    }

    @Test("with no progress and requests waiting, it invokes the OOM handler itself (R6)")
    func oomForWaiters() throws {
        let mm = try system()
        let released = Atomic<Bool>(false)
        let worker = BackgroundWorker()
        let cacheBox = Locked<TestCache?>(nil)
        let g = mm.makeGroup(name: "victim") { _ in
            worker.run { cacheBox.withLock { $0 }?.clear(); released.store(true, ordering: .relaxed) }
        }
        let cache = TestCache(mm, group: g)  // not registered as a shrinker: only OOM frees it
        cacheBox.withLock { $0 = cache }
        cache.fill(5000, policy: .atomic)
        watchdog("a restricted guaranteed request rescued by the background reclaimer's OOM kill") {
            let p = withAllocationScope(.excluding(.filesystem)) { mm.allocateGuaranteed(byteCount: 4096) }
            mm.deallocate(p)
        }
        worker.join()
        #expect(released.load(ordering: .relaxed) == true)
        #expect(mm.statistics()[counter: "oom_kill"] == 1)
    }

    @Test("systems with a background reclaimer start and stop cleanly")
    func lifecycle() throws {
        for _ in 0..<20 {
            let mm = try system()
            _ = mm.allocate(byteCount: 100)
        }
    }
}

@Suite("Reclaim recursion checker", .timeLimit(.minutes(1)))
struct ReclaimRecursionTests {
    @Test("a declared lock held across an allocation that may reclaim its domain is reported at once, with plenty of memory")
    func declared() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let recorder = EventRecorder(mm)
        let journal = ReclaimCheckedMutex(0, name: "journal-declared", takenByReclaimIn: .filesystem)
        journal.withLock { _ in
            let p = mm.allocate(byteCount: 64)!  // may reclaim .filesystem: reported
            mm.deallocate(p)
            let q = withAllocationScope(.excluding(.filesystem)) { mm.allocate(byteCount: 64)! }  // fixed: silent
            mm.deallocate(q)
        }
        let reports = recorder.recursions
        #expect(reports.count == 1)
        #expect(reports.first?.lock == "journal-declared")
        #expect(reports.first?.lockSite.file.contains("BackgroundReclaimTests") == true)
        #expect(reports.first?.allocationSite?.file.contains("BackgroundReclaimTests") == true)
        #expect(reports.first?.fix.contains(".excluding(.filesystem)") == true)
    }

    /// How a request of each path is made: a kmalloc object, a block from the
    /// per-thread lists, blocks above them (`.contiguous`, `.automatic`), and
    /// `allocatePages` of an order above the lists.
    enum CheckedRequest: String, CaseIterable, Sendable {
        case object, listBlock, largeContiguous, largeAutomatic, highOrderPages
    }

    @Test("every path of an allocation made while holding a checked lock reaches the checker, large blocks too",
          arguments: CheckedRequest.allCases)
    func everyPathIsChecked(_ request: CheckedRequest) throws {
        let mm = try makeSystem(capacity: 64 << 20)
        let recorder = EventRecorder(mm)
        let lock = ReclaimCheckedMutex(0, name: "journal-\(request.rawValue)", takenByReclaimIn: .filesystem)
        lock.withLock { _ in
            let p: UnsafeMutableRawPointer? = switch request {
            case .object: mm.allocate(byteCount: 64)
            case .listBlock: mm.allocate(byteCount: 16 << 10)
            case .largeContiguous: mm.allocate(byteCount: 256 << 10, policy: AllocationPolicy(placement: .contiguous))
            case .largeAutomatic: mm.allocate(byteCount: 256 << 10)
            case .highOrderPages: mm.allocatePages(order: 6)
            }
            #expect(p != nil)
            if let p { mm.deallocate(p) }
        }
        #expect(recorder.recursions.count == 1, "a \(request) allocation under a held checked lock was not checked")
        #expect(recorder.recursions.first?.lock == "journal-\(request.rawValue)")
    }

    @Test("excluding a domain covers the domains defined within it: no report for a sub-domain's lock in an outer scope")
    func subdomainExcludedByOuterScope() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let recorder = EventRecorder(mm)
        let blockCache = ReclaimDomain("checker-block-cache", within: .filesystem)
        let btree = ReclaimCheckedMutex(0, name: "btree-subdomain", takenByReclaimIn: blockCache)
        btree.withLock { _ in
            let q = withAllocationScope(.excluding(.filesystem)) { mm.allocate(byteCount: 64)! }  // covers block-cache
            mm.deallocate(q)
            let r = withAllocationScope(.excluding(blockCache)) { mm.allocate(byteCount: 64)! }
            mm.deallocate(r)
        }
        #expect(recorder.recursions.isEmpty, "\(recorder.recursions)")
        btree.withLock { _ in
            let p = mm.allocate(byteCount: 64)!  // no scope: reported
            mm.deallocate(p)
        }
        #expect(recorder.recursions.count == 1 && recorder.recursions.first?.domain == "checker-block-cache")
    }

    @Test("the checker learns which locks a domain's shrinkers take")
    func learned() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        let journal = ReclaimCheckedMutex(0, name: "journal-learned")
        let cache = TestCache(mm, domain: .filesystem, beforeScan: { journal.withLock { _ in true } })
        _ = mm.registerShrinker(cache)
        cache.fill(5000, policy: .atomic)
        _ = mm.reclaim(bytes: 64 << 10)  // the shrinker takes the journal: learned
        cache.fill(5000, policy: .atomic)
        journal.withLock { _ in
            if let p = mm.allocate(byteCount: 64, policy: .nonBlocking) { mm.deallocate(p) }  // cannot reclaim: silent
            if let p = mm.allocate(byteCount: 64, policy: .failFast) { mm.deallocate(p) }     // may reclaim: reported
        }
        let reports = recorder.recursions
        #expect(reports.contains { $0.lock == "journal-learned" && $0.shrinker == "test-cache" })
    }

    /// The seed's deadlock pattern, written correctly: transaction threads
    /// hold the journal lock inside `.excluding(.filesystem)` and make
    /// guaranteed allocations while an inode cache — whose `.filesystem`
    /// shrinker needs the journal lock — holds most of the memory. It must
    /// finish: the background reclaimer shrinks the inode cache when the
    /// journal is free, a page cache shrinks from any context, and a network
    /// thread releases its buffers over time (memory freed elsewhere). With
    /// the scope, nothing is reported. (Were the inode cache to keep growing
    /// into every page freed elsewhere, a transaction waiting for memory
    /// while holding the journal would wait for ever: no scope fixes a
    /// cache that only the holder's lock can shrink.)
    @Test("the seed's deadlock pattern finishes when transactions use the NOFS scope")
    func transactionCommit() throws {
        let mm = try makeExactSystem { $0.backgroundReclaim = true; $0.capacity = 8 << 20; $0.watermarks = nil }
        let recorder = EventRecorder(mm)
        let journal = ReclaimCheckedMutex([UInt](), name: "journal", takenByReclaimIn: .filesystem)
        let inodes = TestCache(mm, name: "inode-cache", domain: .filesystem, beforeScan: {
            journal.withLockIfAvailable { _ in true } ?? false   // busy journal: .stop, retry later
        })
        let pageCache = TestCache(mm, name: "page-cache", seeks: 1)
        _ = mm.registerShrinker(inodes)
        _ = mm.registerShrinker(pageCache)
        pageCache.fill(200, policy: .atomic)
        let network = (0..<150).compactMap { _ in mm.allocate(byteCount: 4096, policy: .atomic) }.map { UInt(bitPattern: $0) }
        inodes.fill(5000, policy: .atomic)      // the inode cache takes the rest, down to min/4
        let committed = Atomic<Int>(0)
        watchdog("two transaction threads committing 200 transactions each", seconds: 30) {
            runThreads(3) { t in
                if t == 2 {  // the network thread releases its buffers, a few at a time
                    for chunk in stride(from: 0, to: network.count, by: 5) {
                        for a in network[chunk..<min(chunk + 5, network.count)] { mm.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
                        sleep(milliseconds: 2)
                    }
                    return
                }
                for _ in 0..<200 {
                    journal.withLock { entries in
                        withAllocationScope(.excluding(.filesystem)) {
                            let buffer = mm.allocateGuaranteed(byteCount: 16 << 10)
                            entries.append(UInt(bitPattern: buffer))
                        }
                        if entries.count > 8 {
                            for a in entries { mm.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
                            entries.removeAll()
                        }
                    }
                    committed.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        #expect(committed.load(ordering: .relaxed) == 400)
        #expect(recorder.recursions.isEmpty)
    }

    @Test("the same pattern without the scope is reported by the checker, not left to hang")
    func transactionWithoutScope() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let recorder = EventRecorder(mm)
        let journal = ReclaimCheckedMutex([UInt](), name: "journal-noscope", takenByReclaimIn: .filesystem)
        journal.withLock { entries in
            entries.append(UInt(bitPattern: mm.allocateGuaranteed(byteCount: 16 << 10)))  // no scope, plenty of memory
        }
        let reports = recorder.recursions
        #expect(reports.count == 1)
        #expect(reports.first?.description.contains("fix: allocate inside withAllocationScope(.excluding(.filesystem))") == true)
    }

    @Test("reclaim on a thread that holds a lock a shrinker needs skips that shrinker instead of deadlocking")
    func skipsShrinker() throws {
        let mm = try makeExactSystem()
        let journal = ReclaimCheckedMutex(0, name: "journal-skip", takenByReclaimIn: .filesystem)
        let fsCache = TestCache(mm, name: "fs", domain: .filesystem, beforeScan: { journal.withLock { _ in true } })
        let anyCache = TestCache(mm, name: "any")
        _ = mm.registerShrinker(fsCache)
        _ = mm.registerShrinker(anyCache)
        fsCache.fill(400, policy: .atomic)
        anyCache.fill(400, policy: .atomic)
        watchdog("an allocation under the journal lock that needs reclaim") {
            journal.withLock { _ in
                if let p = mm.allocate(byteCount: 4096) { mm.deallocate(p) }
            }
        }
        #expect(fsCache.scanCount == 0)
        #expect(anyCache.scanCount > 0)
    }
}

@Suite("Concurrency: reclaim stress", .timeLimit(.minutes(2)))
struct ReclaimStressTests {
    @Test("two threads allocate for 3 s while a cache is shrunk concurrently: nothing lost or freed twice, invariants hold")
    func allocateWhileShrinking() throws {
        let mm = try makeSystem(capacity: 16 << 20, releaseDelay: .zero)
        let cache = TestCache(mm)
        _ = mm.registerShrinker(cache)
        cache.fill(3000)
        let corrupted = Atomic<Int>(0)
        let deadline = ContinuousClock.now + .seconds(3)
        runThreads(3) { t in
            var rng = SeededGenerator(seed: UInt64(t) + 7)
            if t == 2 {
                while ContinuousClock.now < deadline {
                    _ = mm.reclaim(bytes: 256 << 10)
                    cache.fill(64)
                }
                return
            }
            var live: [(UnsafeMutableRawPointer, Int, UInt64)] = []
            while ContinuousClock.now < deadline {
                if live.count < 100 && rng.next() % 2 == 0 {
                    let size = 1 << Int(rng.next() % 15)
                    if let p = mm.allocate(byteCount: size, policy: .failFast) {
                        let tag = rng.next()
                        p.storeBytes(of: tag, as: UInt64.self)
                        live.append((p, size, tag))
                    }
                } else if !live.isEmpty {
                    let (p, _, tag) = live.removeLast()
                    if p.load(as: UInt64.self) != tag { corrupted.wrappingAdd(1, ordering: .relaxed) }
                    mm.deallocate(p)
                }
            }
            for (p, _, tag) in live {
                if p.load(as: UInt64.self) != tag { corrupted.wrappingAdd(1, ordering: .relaxed) }
                mm.deallocate(p)
            }
        }
        cache.clear()
        mm.drainPerThreadLists()  // objects freed here sit in this thread's magazines and the slabs
        #expect(corrupted.load(ordering: .relaxed) == 0)
        #expect(mm._invariantViolations() == [])
        #expect(mm.statistics().freeBytes == 16 << 20)
        #expect(mm.statistics()[counter: "hardening_violation"] == 0)
    }

    @Test("pressure: stalls show up as some/full shares and total time, in /proc/pressure/memory format")
    func pressure() throws {
        let mm = try makeExactSystem()
        let held = fillPages(mm, .standard)
        let waiter = BackgroundThread { mm.deallocate(mm.allocateGuaranteed(byteCount: 4096)) }
        sleep(milliseconds: 150)
        let p = mm.statistics().pressure
        #expect(p.some.totalMicroseconds > 50_000)
        #expect(p.some.avg10 > 0)
        #expect(p.rendered.hasPrefix("some avg10="))
        #expect(p.rendered.contains("\nfull avg10="))
        mm.freePages(held[0], order: 0)
        watchdog("the stalled waiter after a free") { waiter.join() }
        let after = mm.statistics().pressure.some.totalMicroseconds
        sleep(milliseconds: 20)
        #expect(mm.statistics().pressure.some.totalMicroseconds == after)  // no stall, no growth
    }
}

@Suite("Reclaim recursion: undeclared locks", .timeLimit(.minutes(1)))
struct UndeclaredLockTests {
    @Test("a shrinker that needs an undeclared lock its reclaiming thread holds neither hangs nor crashes: reported, skipped, learned")
    func undeclared() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        let journal = ReclaimCheckedMutex(0, name: "journal-undeclared")
        let fsCache = TestCache(mm, name: "fs-undeclared", domain: .filesystem, beforeScan: { journal.withLock { _ in true } })
        let anyCache = TestCache(mm, name: "any-undeclared")
        _ = mm.registerShrinker(fsCache)
        _ = mm.registerShrinker(anyCache)
        fsCache.fill(500, policy: .atomic)
        anyCache.fill(400, policy: .atomic)
        let succeeded = Locked<Bool>(false)
        watchdog("an allocation under an undeclared lock that reclaim needs") {
            journal.withLock { _ in
                if let p = mm.allocate(byteCount: 4096) {
                    succeeded.withLock { $0 = true }
                    mm.deallocate(p)
                }
            }
        }
        #expect(succeeded.withLock { $0 })
        #expect(anyCache.scanCount > 0)
        let reports = recorder.recursions
        #expect(reports.contains { $0.shrinker == "fs-undeclared" && $0.fix.contains("helper thread") })
        // Once the journal is free the helper finishes and the checker has learned the lock.
        let deadline = ContinuousClock.now + .seconds(5)
        while ReclaimRecursionChecker.shared.domains(of: ReclaimRecursionChecker.shared.lockClass(named: "journal-undeclared", declared: nil)).domains == 0,
              ContinuousClock.now < deadline { sleep(milliseconds: 5) }
        journal.withLock { _ in
            if let p = mm.allocate(byteCount: 64) { mm.deallocate(p) }   // now reported at the allocation
        }
        let after = recorder.recursions
        #expect(after.contains { $0.lock == "journal-undeclared" && $0.allocationSite != nil && $0.fix.contains(".excluding(.filesystem)") })
    }
}

// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

@Suite("Shrinkers and direct reclaim", .timeLimit(.minutes(1)))
struct ShrinkerTests {
    @Test("scan targets follow (freeable >> priority) × 4 / seeks, with deferred work carried over")
    func scanTargets() throws {
        let mm = try makeExactSystem()
        let s = RecordingShrinker(freeable: 100_000)
        _ = mm.registerShrinker(s)
        let registry = mm.reclaim.shrinkers
        // priority 12: (100000 >> 12) × 4 / 2 = 48 < batch: deferred, not scanned
        _ = registry.shrink(priority: 12, context: nil)
        #expect(s.asked.withLock { $0 }.isEmpty)
        #expect(registry.statistics()[0].deferred == 48)
        // priority 8: 48 + (100000 >> 8) × 2 = 48 + 780 = 828: six batches of 128, 60 deferred
        _ = registry.shrink(priority: 8, context: nil)
        #expect(s.asked.withLock { $0 } == Array(repeating: 128, count: 6))
        #expect(registry.statistics()[0].deferred == 60)
        #expect(registry.statistics()[0].scanned == 768)
    }

    @Test("seeks: cheaper-to-recreate caches are scanned harder; seeks 0 scans half")
    func seeks() throws {
        let mm = try makeExactSystem()
        let one = RecordingShrinker(freeable: 100_000, seeks: 1)
        let four = RecordingShrinker(freeable: 100_000, seeks: 4)
        let zero = RecordingShrinker(freeable: 1000, seeks: 0)
        for s in [one, four, zero] as [any Shrinker] { _ = mm.registerShrinker(s) }
        _ = mm.reclaim.shrinkers.shrink(priority: 6, context: nil)
        // (100000 >> 6) = 1562: × 4 = 6248 (48 batches), × 1 = 1562 (12 batches); half of 1000 = 500 (3 batches)
        #expect(one.asked.withLock { $0.count } == 48)
        #expect(four.asked.withLock { $0.count } == 12)
        #expect(zero.asked.withLock { $0.count } == 3)
    }

    @Test(".stop ends the shrinker's pass and defers the rest")
    func stop() throws {
        let mm = try makeExactSystem()
        let s = RecordingShrinker(freeable: 10_000, stopAfter: 2)
        _ = mm.registerShrinker(s)
        _ = mm.reclaim.shrinkers.shrink(priority: 0, context: nil)
        #expect(s.asked.withLock { $0.count } == 3)
        let stats = mm.reclaim.shrinkers.statistics()[0]
        #expect(stats.stops == 1)
        #expect(stats.deferred == 20_000 - 256)
    }

    @Test("a shrinker in an excluded domain, or within one, is never called from that context; an unrestricted request calls it and succeeds",
          arguments: [ReclaimDomain.filesystem, ReclaimDomain("block-cache", within: .filesystem)])
    func domains(domain: ReclaimDomain) throws {
        let mm = try makeExactSystem()
        let cache = TestCache(mm, domain: domain)
        _ = mm.registerShrinker(cache)
        cache.fill(10_000, policy: .atomic)
        for scope in [AllocationScope.excluding(.filesystem), .excluding(.io)] {
            let p = withAllocationScope(scope) { mm.allocate(byteCount: 4096, policy: .failFast) }
            #expect(p == nil)
            #expect(cache.scanCount == 0)
            #expect(cache.counts.load(ordering: .relaxed) == 0)
        }
        let q = try #require(mm.allocate(byteCount: 4096, policy: .failFast))
        #expect(cache.scanCount > 0)
        mm.deallocate(q)
        #expect(mm.statistics().shrinkers[0].skippedForDomain == 2 * 13)  // two requests, priorities 12...0
    }

    @Test("shrinkers run inside .reclaiming: their own allocations use the emergency reserve and never recurse")
    func reclaimingContext() throws {
        let mm = try makeExactSystem()
        let sawReclaiming = Atomic<Bool>(false)
        let cache = TestCache(mm, beforeScan: {
            sawReclaiming.store(AllocationScope.current.isReclaiming, ordering: .relaxed)
            return true
        })
        _ = mm.registerShrinker(cache)
        cache.fill(10_000, policy: .atomic)
        let p = try #require(mm.allocate(byteCount: 4096))
        mm.deallocate(p)
        let reclaiming = sawReclaiming.load(ordering: .relaxed)
        #expect(reclaiming)
        #expect(mm.statistics()[counter: "direct_reclaim_runs"] >= 1)
        #expect(mm.statistics()[counter: "allocstall"] >= 1)
    }

    @Test("unregister is safe while a scan runs: it waits, and the shrinker is never called afterwards")
    func unregisterDuringScan() throws {
        let mm = try makeExactSystem()
        let inScan = Atomic<Bool>(false)
        let cache = TestCache(mm, beforeScan: {
            inScan.store(true, ordering: .relaxed)
            sleep(milliseconds: 100)
            return true
        })
        let registration = mm.registerShrinker(cache)
        cache.fill(10_000, policy: .atomic)
        let reclaimer = BackgroundThread { _ = mm.reclaim(bytes: 4096) }
        while !inScan.load(ordering: .relaxed) { sleep(milliseconds: 1) }
        registration.unregister()
        let scansAtUnregister = cache.scanCount
        reclaimer.join()
        _ = mm.reclaim(bytes: 1 << 20)
        #expect(cache.scanCount == scansAtUnregister)
    }

    @Test("proactive reclaim frees what is asked from shrinkers")
    func proactive() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let cache = TestCache(mm)
        _ = mm.registerShrinker(cache)
        cache.fill(1000)
        let freed = mm.reclaim(bytes: 1 << 20)
        #expect(freed >= 1 << 20)
        #expect(cache.count <= 1000 - 256)
    }
}

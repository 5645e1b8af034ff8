// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

@Suite("Per-thread page lists")
struct PerThreadListTests {
    @Test("a free goes to the calling thread's list and the next allocation takes it back")
    func reuse() throws {
        let mm = try makeSystem(capacity: 64 << 20)
        let a = try #require(mm.allocatePages(order: 0))
        mm.freePages(a, order: 0)
        #expect(mm.statistics().perThreadFreeBytes > 0)
        let b = try #require(mm.allocatePages(order: 0))
        #expect(a == b)
        mm.freePages(b, order: 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("refills come in batches: one lock round trip serves many allocations")
    func batching() throws {
        let mm = try makeSystem(capacity: 64 << 20)
        var held: [UnsafeMutableRawPointer] = []
        for _ in 0..<64 { held.append(try #require(mm.allocatePages(order: 0))) }
        let refills = mm.statistics()[counter: "pcp_refill"]
        #expect(refills > 0 && refills <= 3, "64 allocations took \(refills) refills")
        for p in held { mm.freePages(p, order: 0) }
        #expect(mm._invariantViolations() == [])
    }

    @Test("thread exit returns the thread's cached blocks", .timeLimit(.minutes(1)))
    func threadExit() throws {
        let mm = try makeSystem(capacity: 64 << 20)
        runThreads(2) { _ in
            var held: [UnsafeMutableRawPointer] = []
            for order in 0...3 { for _ in 0..<10 { held.append(mm.allocatePages(order: order)!) } }
            for (i, p) in held.enumerated() { mm.freePages(p, order: i / 10) }
        }
        let stats = mm.statistics()
        #expect(stats.perThreadFreeBytes == 0)
        #expect(stats.freeBytes == 64 << 20)
        #expect(stats.freeBlocksPerOrder[maxOrder] == 16)
        #expect(stats[counter: "pgalloc"] == stats[counter: "pgfree"])
        #expect(mm._invariantViolations() == [])
    }

    @Test("one thread using two systems returns each one's blocks when it switches")
    func twoSystems() throws {
        let a = try makeSystem(capacity: 16 << 20)
        let b = try makeSystem(capacity: 16 << 20)
        for _ in 0..<3 {
            let pa = try #require(a.allocatePages(order: 0))
            a.freePages(pa, order: 0)
            let pb = try #require(b.allocatePages(order: 0))
            b.freePages(pb, order: 0)
        }
        // The thread's lists now serve b; a got everything back.
        #expect(a.statistics().perThreadFreeBytes == 0)
        #expect(a.statistics().freeBlocksPerOrder[maxOrder] == 4)
        #expect(a._invariantViolations() == [])
        #expect(b._invariantViolations() == [])
    }

    @Test("a thread whose system was dropped forgets its blocks instead of touching unmapped memory")
    func droppedSystem() throws {
        do {
            let gone = try makeSystem()
            let p = try #require(gone.allocatePages(order: 0))
            gone.freePages(p, order: 0)  // cached in this thread's list
        }
        let next = try makeSystem()
        let q = try #require(next.allocatePages(order: 0))
        next.freePages(q, order: 0)
        #expect(next._invariantViolations() == [])
    }

    @Test("drainPerThreadLists returns the caller's blocks at once and other threads' at their next slow path")
    func drainRequests() throws {
        let mm = try makeSystem(capacity: 64 << 20)
        let p = try #require(mm.allocatePages(order: 0))
        mm.freePages(p, order: 0)
        #expect(mm.statistics().perThreadFreeBytes > 0)
        mm.drainPerThreadLists()
        #expect(mm.statistics().perThreadFreeBytes == 0)
        #expect(mm.statistics()[counter: "pcp_drain"] > 0)
    }

    @Test("below low, frees bypass the per-thread lists so memory is shared at once")
    func belowLow() throws {
        let mm = try makeSystem(watermarks: testWatermarks)
        var held: [UnsafeMutableRawPointer] = []
        while let p = mm.allocatePages(order: 0) { held.append(p) }
        for p in held.prefix(10) { mm.freePages(p, order: 0) }
        #expect(mm.statistics().perThreadFreeBytes == 0)
        #expect(mm._invariantViolations() == [])
    }
}

@Suite("Per-thread page list layout")
struct PageListLayoutTests {
    @Test("the slots of each order's list follow those of the lower orders and fit the record")
    func slotLayout() {
        var start = 0
        for order in 0..<perThreadOrderCount {
            #expect(PageLists.slotStart(order) == start)
            start += perThreadListLimit(order)
        }
        #expect(start == 128, "PageListsRecord.slots holds 128 entries")
    }
}

// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

/// The watermarks and reserve tiers (README, "Watermarks and reserves"), on a 4 MiB arena with
/// min/low/high = 256/320/384 pages and no per-thread lists, so every
/// count is exact.
@Suite("Watermarks and reserve tiers")
struct ReserveTierTests {
    let total = 1024

    func fill(_ mm: MemorySystem, _ policy: AllocationPolicy) -> [UnsafeMutableRawPointer] {
        var got: [UnsafeMutableRawPointer] = []
        while let p = mm.allocatePages(order: 0, policy: policy) { got.append(p) }
        return got
    }

    func freePages(_ mm: MemorySystem) -> Int { mm.statistics().freeBytes / pageSize }

    @Test("each tier stops at its own floor: none min, high min/2, atomic min/4")
    func floors() throws {
        let mm = try makeSystem(perThreadLists: false, watermarks: testWatermarks)
        let ordinary = fill(mm, .standard)
        #expect(freePages(mm) == 256)
        #expect(ordinary.count == total - 256)
        // .nonBlocking has no reserves: fails where .atomic still succeeds.
        #expect(mm.allocatePages(order: 0, policy: .nonBlocking) == nil)
        let high = fill(mm, AllocationPolicy(reserve: .high))
        #expect(high.count == 128)
        #expect(freePages(mm) == 128)
        #expect(mm.allocatePages(order: 0, policy: .standard) == nil)
        let atomic = fill(mm, .atomic)
        #expect(atomic.count == 64)
        #expect(freePages(mm) == 64)
        #expect(mm._invariantViolations() == [])
    }

    @Test("deeper tiers reach further: oomVictim min/8, emergency everything", arguments: [
        (ReserveTier.oomVictim, 32), (ReserveTier.emergency, 0), (ReserveTier.atomic, 64), (ReserveTier.none, 256),
    ])
    func deepTiers(tier: ReserveTier, floor: Int) throws {
        let mm = try makeSystem(perThreadLists: false, watermarks: testWatermarks)
        var got = 0
        while mm.pages.takeBlock(order: 0, floor: tier.floor(min: mm.pages.watermarks.min), refill: nil) != nil { got += 1 }
        #expect(freePages(mm) == floor)
        #expect(got == total - floor)
    }

    @Test("inside a reclaiming scope allocations use the emergency tier: down to 0 (R5)")
    func reclaimingScopeIsEmergency() throws {
        let mm = try makeSystem(perThreadLists: false, watermarks: testWatermarks)
        _ = fill(mm, .standard)
        #expect(freePages(mm) == 256)
        let more = withAllocationScope(.reclaiming) { fill(mm, .standard) }
        #expect(more.count == 256)
        #expect(freePages(mm) == 0)
    }

    @Test("a tier never takes a block that would cross its floor, whatever the order")
    func highOrderFloor() throws {
        let mm = try makeSystem(perThreadLists: false, watermarks: testWatermarks)
        // Leave 300 free pages: an order-6 block (64 pages) would leave 236 < 256.
        var held: [UnsafeMutableRawPointer] = []
        for _ in 0..<(total - 300) { held.append(try #require(mm.allocatePages(order: 0))) }
        #expect(mm.allocatePages(order: 6, policy: .standard) == nil)
        #expect(mm.allocatePages(order: 5, policy: .standard) != nil)
    }

    @Test("falling below low wakes the background reclaimer; the fast path above low does not")
    func lowWakes() throws {
        let mm = try makeSystem(perThreadLists: false, watermarks: testWatermarks)
        for _ in 0..<(total - 321) { _ = try #require(mm.allocatePages(order: 0)) }
        #expect(mm.statistics()[counter: "low_watermark_wake"] == 0)
        _ = try #require(mm.allocatePages(order: 0))  // leaves 320 = low
        _ = try #require(mm.allocatePages(order: 0))  // below low: slow path
        #expect(mm.statistics()[counter: "low_watermark_wake"] == 1)
    }

    @Test("a failed request is reported with its tier unless it asked not to be")
    func failureReport() throws {
        let mm = try makeSystem(perThreadLists: false, watermarks: testWatermarks)
        let recorder = EventRecorder(mm)
        _ = fill(mm, .standard)
        #expect(recorder.failures.count == 1)
        #expect(recorder.failures.first?.tier == ReserveTier.none)
        #expect(recorder.failures.first?.snapshot.contains("min 1024 kB") == true)
        _ = mm.allocatePages(order: 0, policy: .nonBlocking)  // reportsFailure: false
        #expect(recorder.failures.count == 1)
        #expect(mm.statistics()[counter: "pgalloc_fail"] == 2)
    }
}

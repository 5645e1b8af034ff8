// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Testing

/// Which free block a request gets: resident ("warm") memory before memory
/// that was returned to the OS or never touched, and vmalloc's frames from
/// the released memory it does not use.
@Suite("Warm memory first")
struct WarmFirstTests {
    /// A zone of two max-order blocks over zeroed descriptors.
    func withZone(_ body: (inout BuddyZone) -> Void) {
        let pageCount = 2 << maxOrder
        let frames = UnsafeMutablePointer<PageFrame>.allocate(capacity: pageCount)
        frames.initialize(repeating: PageFrame(), count: pageCount)
        defer { frames.deallocate() }
        var zone = BuddyZone(frames: frames, pageCount: pageCount, tick: 0)
        body(&zone)
    }

    @Test("a request splits the smallest warm block before it takes a smaller released one")
    func warmBeforeReleased() {
        withZone { zone in
            // From the frontier: pages 0 and 1, then the order-3 block at 8; the halves split off are released.
            #expect(zone.take(order: 0) == 0)
            #expect(zone.take(order: 0) == 1)
            #expect(zone.take(order: 3) == 8)
            zone.put(8, order: 3, tick: 0)          // warm: it held data; its buddy (0–7) is in use
            zone.put(1, order: 0, tick: 0)
            zone.markReleased(1, order: 0)          // returned to the OS
            // Released blocks of orders 0, 1 and 2 are smaller; the warm order-3 block wins.
            #expect(zone.take(order: 0) == 8)
            // The halves split off a warm block are warm: they come next.
            #expect(zone.take(order: 0) == 9)
            #expect(zone.take(order: 1) == 10)
            #expect(zone.take(order: 2) == 12)
            // With no warm block left, the smallest released one.
            #expect(zone.take(order: 0) == 1)
        }
    }

    @Test("takeReleased prefers released memory, and says when it had to take a warm block")
    func releasedFirst() {
        withZone { zone in
            #expect(zone.take(order: maxOrder) == 0)
            zone.put(0, order: maxOrder, tick: 0)   // warm, at the head of its list
            let first = zone.takeReleased(order: 2)
            #expect(first?.pfn == 1 << maxOrder && first?.released == true, "from the frontier, not the warm block")
            // Use up the released memory; the warm block is what is left.
            var taken = 0
            while let block = zone.takeReleased(order: 2), block.released { taken += 1 }
            #expect(taken == (1 << maxOrder) / 4 - 1)
            zone.put(1 << maxOrder, order: 2, tick: 0, released: true)
            #expect(zone.takeReleased(order: 2).map { $0.released } == true, "a block put back released is released")
        }
    }

    @Test("vmalloc takes released frames and gives them back released: the warm blocks stay resident")
    func vmallocLeavesWarmMemory() throws {
        let mm = try makeSystem(capacity: 64 << 20, perThreadLists: false)
        // A warm 4 MiB block: touched, then freed (it stays resident, at the head of its list).
        let warm = try #require(mm.allocatePages(order: maxOrder))
        memset(warm, 0x5a, pageSize << maxOrder)
        mm.freePages(warm, order: maxOrder)
        let before = mm.statistics()
        var policy = AllocationPolicy.standard
        policy.placement = .virtual
        let size = (4 << 20) + (64 << 10)
        let area = try #require(mm.allocate(byteCount: size, policy: policy))
        memset(area, 1, size)
        let during = mm.statistics()
        #expect(during.residentBytes >= before.residentBytes + size,
                "the warm block's memory is still resident beside the area's (taking it would have discarded it)")
        #expect(during.releasedBytes == before.releasedBytes - size, "the area's frames were released ones")
        mm.deallocate(area)
        let after = mm.statistics()
        #expect(after.releasedBytes == before.releasedBytes, "the frames came back released, not as warm memory")
        // The next contiguous request gets the warm block, not a frame the area discarded.
        let again = try #require(mm.allocatePages(order: maxOrder))
        #expect(again == warm)
        #expect(again.load(fromByteOffset: 12345, as: UInt8.self) == 0x5a)
        mm.freePages(again, order: maxOrder)
        #expect(mm._invariantViolations() == [])
    }
}

// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

@Suite("Buddy allocator")
struct BuddyAllocatorTests {
    @Test("every order allocates a block aligned to its size, inside the arena", arguments: 0...maxOrder)
    func alignment(order: Int) throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let p = try #require(mm.allocatePages(order: order))
        let offset = UInt(bitPattern: p) - UInt(bitPattern: mm.pageFastPath.directMap)
        #expect(offset % UInt(pageSize << order) == 0)
        #expect(offset + UInt(pageSize << order) <= UInt(mm.configuration.capacity))
        stamp(p, order: order, tag: 42)
        #expect(stampIntact(p, order: order, tag: 42))
        mm.freePages(p, order: order)
        #expect(mm._invariantViolations() == [])
        #expect(mm.statistics().freeBytes == 16 << 20)
    }

    @Test("splitting and merging: a fresh arena is all max-order blocks, and returns to that")
    func splitMerge() throws {
        let mm = try makeSystem(capacity: 8 << 20, perThreadLists: false)
        #expect(mm.statistics().freeBlocksPerOrder == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
        let p = try #require(mm.allocatePages(order: 0))
        // One order-10 block split into 1 + 1 + 2 + ... + 512 pages.
        #expect(mm.statistics().freeBlocksPerOrder == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        #expect(mm._invariantViolations() == [])
        mm.freePages(p, order: 0)
        #expect(mm.statistics().freeBlocksPerOrder == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
        #expect(mm._invariantViolations() == [])
    }

    @Test("exhaustion: allocate until nil, free all, the same amount again", arguments: [false, true])
    func exhaustion(perThreadLists: Bool) throws {
        let mm = try makeSystem(capacity: 8 << 20, perThreadLists: perThreadLists)
        func fill() -> [UnsafeMutableRawPointer] {
            var got: [UnsafeMutableRawPointer] = []
            while let p = mm.allocatePages(order: 0, policy: .nonBlocking) { got.append(p) }
            return got
        }
        let first = fill()
        let minPages = PageWatermarks(mm.configuration.effectiveWatermarks).min
        // .nonBlocking may take pages down to min, no further.
        #expect(first.count == (8 << 20) / pageSize - minPages)
        #expect(mm._invariantViolations() == [])
        for p in first { mm.freePages(p, order: 0) }
        #expect(mm.statistics().freeBytes == 8 << 20)
        let second = fill()
        #expect(second.count == first.count)
        for p in second { mm.freePages(p, order: 0) }
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBlocksPerOrder[maxOrder] == 2)
        #expect(mm._invariantViolations() == [])
    }

    @Test("an order outside 0...10 returns nil with an invalidRequest event", arguments: [-1, 11, Int.min, Int.max])
    func invalidOrder(order: Int) throws {
        let mm = try makeSystem()
        let recorder = EventRecorder(mm)
        #expect(mm.allocatePages(order: order) == nil)
        #expect(recorder.invalidRequests.count == 1)
        #expect(recorder.invalidRequests.first?.operation == "allocatePages(order: \(order))")
        #expect(mm.statistics()[counter: "invalid_request"] == 1)
        #expect(mm.statistics().freeBytes == 4 << 20)
    }

    @Test("zeroed requests return zero-filled pages, also when recycled", arguments: [0, 2, 5])
    func zeroed(order: Int) throws {
        let mm = try makeSystem()
        let a = try #require(mm.allocatePages(order: order))
        a.initializeMemory(as: UInt8.self, repeating: 0xAB, count: pageSize << order)
        mm.freePages(a, order: order)
        var policy = AllocationPolicy.standard
        policy.zeroed = true
        let b = try #require(mm.allocatePages(order: order, policy: policy))
        let bytes = UnsafeRawBufferPointer(start: b, count: pageSize << order)
        #expect(bytes.allSatisfy { $0 == 0 })
        mm.freePages(b, order: order)
    }

    /// The seeded random test of the issue: 10^5 operations against a
    /// reference model of the arena (a page bitmap), invariants checked every
    /// 500 operations and at the end. Without per-thread lists the model also
    /// predicts exactly when an allocation must succeed.
    @Test("seeded random sequence against a reference model", arguments: [(UInt64(1), false), (UInt64(2), true), (UInt64(3), false)])
    func randomAgainstModel(seed: UInt64, perThreadLists: Bool) throws {
        let capacity = 4 << 20
        let pagesTotal = capacity / pageSize
        let mm = try makeSystem(capacity: capacity, perThreadLists: perThreadLists, watermarks: testWatermarks,
                                releaseOrder: 8, releaseDelay: .zero)
        let w = PageWatermarks(testWatermarks)
        var rng = SeededGenerator(seed: seed)
        var used = [Bool](repeating: false, count: pagesTotal)
        var usedCount = 0
        var live: [(p: UnsafeMutableRawPointer, order: Int, tag: UInt64)] = []
        let policies: [AllocationPolicy] = [.standard, .nonBlocking, .atomic, AllocationPolicy(reserve: .high)]
        func modelHasRun(order: Int) -> Bool {
            stride(from: 0, to: pagesTotal, by: 1 << order).contains { start in
                !(start..<(start + (1 << order))).contains { used[$0] }
            }
        }
        for step in 0..<100_000 {
            let allocate = live.isEmpty || (live.count < 400 && rng.next() % 100 < 55)
            if allocate {
                let r = Int(rng.next() % 100)
                let order = r < 60 ? 0 : (r < 80 ? Int(rng.next() % 4) : Int(rng.next() % UInt64(maxOrder + 1)))
                let policy = policies[Int(rng.next() % UInt64(policies.count))]
                let tag = rng.next()
                if let p = mm.allocatePages(order: order, policy: policy) {
                    let pfn = (UInt(bitPattern: p) - UInt(bitPattern: mm.pageFastPath.directMap)) / UInt(pageSize)
                    let first = Int(pfn)
                    try #require(first % (1 << order) == 0, "misaligned block at step \(step)")
                    for i in first..<(first + (1 << order)) {
                        try #require(!used[i], "page \(i) handed out twice (step \(step))")
                        used[i] = true
                    }
                    usedCount += 1 << order
                    stamp(p, order: order, tag: tag)
                    live.append((p, order, tag))
                } else if !perThreadLists {
                    let floor = policy.baseTier.floor(min: w.min)
                    let free = pagesTotal - usedCount
                    try #require(!(modelHasRun(order: order) && free - (1 << order) >= floor),
                                 "order-\(order) \(policy.baseTier) request failed with \(free) free pages (step \(step))")
                }
            } else {
                let i = Int(rng.next() % UInt64(live.count))
                let block = live.remove(at: i)
                try #require(stampIntact(block.p, order: block.order, tag: block.tag), "block overwritten (step \(step))")
                let first = Int((UInt(bitPattern: block.p) - UInt(bitPattern: mm.pageFastPath.directMap)) / UInt(pageSize))
                for i in first..<(first + (1 << block.order)) { used[i] = false }
                usedCount -= 1 << block.order
                mm.freePages(block.p, order: block.order)
            }
            if step % 500 == 0 {
                let problems = mm._invariantViolations()
                try #require(problems.isEmpty, "step \(step): \(problems)")
                try #require(mm.statistics().freeBytes == (pagesTotal - usedCount) * pageSize, "free bytes disagree at step \(step)")
            }
        }
        for block in live { mm.freePages(block.p, order: block.order) }
        mm.drainPerThreadLists()
        #expect(mm._invariantViolations() == [])
        #expect(mm.statistics().freeBytes == capacity)
        #expect(mm.statistics().freeBlocksPerOrder[maxOrder] == 1)
    }
}

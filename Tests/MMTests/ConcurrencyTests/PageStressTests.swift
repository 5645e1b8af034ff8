// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

/// Concurrency tests; `.ci/run` also runs this suite under ThreadSanitizer.
@Suite("Concurrency: pages", .timeLimit(.minutes(2)))
struct PageStressTests {
    @Test("two threads allocate, fill, verify and free; blocks never overlap", arguments: [true, false])
    func twoThreads(perThreadLists: Bool) throws {
        let mm = try makeSystem(capacity: 16 << 20, perThreadLists: perThreadLists, releaseDelay: .zero)
        let corrupted = Atomic<Int>(0)
        let allocated = Atomic<Int>(0)
        runThreads(2) { t in
            var rng = SeededGenerator(seed: UInt64(100 + t))
            var live: [(UnsafeMutableRawPointer, Int, UInt64)] = []
            for _ in 0..<30_000 {
                if live.isEmpty || (live.count < 200 && rng.next() % 2 == 0) {
                    let order = rng.next() % 10 < 8 ? Int(rng.next() % 4) : Int(rng.next() % 8)
                    if let p = mm.allocatePages(order: order) {
                        let tag = rng.next()
                        stamp(p, order: order, tag: tag)
                        live.append((p, order, tag))
                        allocated.wrappingAdd(1, ordering: .relaxed)
                    }
                } else {
                    let (p, order, tag) = live.remove(at: Int(rng.next() % UInt64(live.count)))
                    if !stampIntact(p, order: order, tag: tag) { corrupted.wrappingAdd(1, ordering: .relaxed) }
                    mm.freePages(p, order: order)
                }
            }
            for (p, order, tag) in live {
                if !stampIntact(p, order: order, tag: tag) { corrupted.wrappingAdd(1, ordering: .relaxed) }
                mm.freePages(p, order: order)
            }
        }
        #expect(corrupted.load(ordering: .relaxed) == 0)
        #expect(allocated.load(ordering: .relaxed) > 10_000)
        #expect(mm._invariantViolations() == [])
        #expect(mm.statistics().freeBytes == 16 << 20)
    }

    @Test("frees from another thread than the allocating one")
    func crossThreadFree() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let handoff = Locked<[UInt]>([])
        let done = Atomic<Bool>(false)
        runThreads(2) { t in
            if t == 0 {
                for _ in 0..<20_000 {
                    if let p = mm.allocatePages(order: 0) {
                        p.storeBytes(of: 0xFEED, as: UInt64.self)
                        handoff.withLock { $0.append(UInt(bitPattern: p)) }
                    }
                }
                done.store(true, ordering: .releasing)
            } else {
                while true {
                    let batch = handoff.withLock { q -> [UInt] in defer { q.removeAll() }; return q }
                    for a in batch {
                        let p = UnsafeMutableRawPointer(bitPattern: a)!
                        precondition(p.load(as: UInt64.self) == 0xFEED)
                        mm.freePages(p, order: 0)
                    }
                    if batch.isEmpty && done.load(ordering: .acquiring) {
                        if handoff.withLock({ $0.isEmpty }) { break }
                    }
                }
            }
        }
        #expect(mm.statistics().freeBytes == 16 << 20)
        #expect(mm._invariantViolations() == [])
    }

    @Test("statistics can be read while other threads allocate")
    func statisticsWhileBusy() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let stop = Atomic<Bool>(false)
        runThreads(3) { t in
            if t == 2 {
                for _ in 0..<200 {
                    let s = mm.statistics()
                    precondition(s.freeBytes <= s.capacity)
                }
                stop.store(true, ordering: .releasing)
            } else {
                while !stop.load(ordering: .acquiring) {
                    if let p = mm.allocatePages(order: t) { mm.freePages(p, order: t) }
                }
            }
        }
        #expect(mm.statistics().freeBytes == 16 << 20)
    }
}

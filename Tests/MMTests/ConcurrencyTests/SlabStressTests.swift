// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

/// Objects crossing threads: remote frees, thread exit, reclaim while
/// threads allocate. Runs under ThreadSanitizer in CI.
@Suite("Concurrency: slab stress")
struct SlabStressTests {
    @Test("producer/consumer: objects allocated on one thread and freed on another stay intact; nothing is lost")
    func remoteFrees() throws {
        let mm = try makeSystem(capacity: 32 << 20)
        let cache = try mm.makeObjectCache(name: "message", size: 48)
        let queue = Locked<[UInt]>([])
        let produced = 20_000
        let consumed = Atomic<Int>(0)
        let corrupted = Atomic<Int>(0)
        watchdog("producer/consumer over a queue", seconds: 60) {
            runThreads(3) { t in
                if t == 0 {
                    for i in 0..<produced {
                        let size = [16, 48, 200, 1000][i % 4]
                        let p = i % 5 == 0 ? cache.allocate()! : mm.allocate(byteCount: size)!
                        p.storeBytes(of: UInt64(i), as: UInt64.self)
                        queue.withLock { $0.append(UInt(bitPattern: p) | UInt(i % 5 == 0 ? 1 : 0)) }
                    }
                } else {
                    while consumed.load(ordering: .relaxed) < produced {
                        guard let item = queue.withLock({ $0.popLast() }) else { continue }
                        let p = UnsafeMutableRawPointer(bitPattern: item & ~1)!
                        let tag = p.load(as: UInt64.self)
                        if tag >= UInt64(produced) { corrupted.wrappingAdd(1, ordering: .relaxed) }
                        if item & 1 == 1 { cache.deallocate(p) } else { mm.deallocate(p) }
                        consumed.wrappingAdd(1, ordering: .relaxed)
                    }
                }
            }
        }
        #expect(corrupted.load(ordering: .relaxed) == 0)
        // The threads have exited: their magazines were flushed to the caches.
        #expect(mm.statistics().slabCaches.reduce(0) { $0 + $1.activeObjects } == 0)
        #expect(mm.statistics().slabCaches.reduce(0) { $0 + $1.cachedInThreads } == 0)
        #expect(cache.destroy() == 0)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 32 << 20)
        #expect(mm._invariantViolations() == [])
        #expect(mm.statistics()[counter: "hardening_violation"] == 0)
    }

    @Test("four threads churn kmalloc classes while a fifth reclaims: contents intact, invariants hold")
    func churnWhileReclaiming() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let corrupted = Atomic<Int>(0)
        let deadline = ContinuousClock.now + .seconds(2)
        watchdog("churn while reclaiming", seconds: 60) {
            runThreads(5) { t in
                if t == 4 {
                    while ContinuousClock.now < deadline { _ = mm.reclaim(bytes: 1 << 20) }
                    return
                }
                var rng = SeededGenerator(seed: UInt64(t) + 100)
                var live: [(UnsafeMutableRawPointer, UInt64)] = []
                while ContinuousClock.now < deadline {
                    if live.count < 300 && rng.next() % 3 != 0 {
                        let size = Int(rng.next() % 8192) + 1
                        if let p = mm.allocate(byteCount: size, policy: .failFast) {
                            let tag = rng.next()
                            p.storeBytes(of: tag, as: UInt64.self)
                            live.append((p, tag))
                        }
                    } else if !live.isEmpty {
                        let i = Int(rng.next() % UInt64(live.count))
                        live.swapAt(i, live.count - 1)
                        let (p, tag) = live.removeLast()
                        if p.load(as: UInt64.self) != tag { corrupted.wrappingAdd(1, ordering: .relaxed) }
                        mm.deallocate(p)
                    }
                }
                for (p, tag) in live {
                    if p.load(as: UInt64.self) != tag { corrupted.wrappingAdd(1, ordering: .relaxed) }
                    mm.deallocate(p)
                }
            }
        }
        #expect(corrupted.load(ordering: .relaxed) == 0)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 16 << 20)
        #expect(mm._invariantViolations() == [])
    }
}

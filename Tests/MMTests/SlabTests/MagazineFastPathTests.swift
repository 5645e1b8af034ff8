// SPDX-License-Identifier: Apache-2.0
@_spi(ProcessAllocator) @testable import MM
import Testing

/// The process allocator's copy of the object fast path (`_MagazineFastPath`):
/// the same magazines as `allocate`/`deallocate`, and the same checks. Every
/// pointer it refuses is one that `deallocate` then frees or reports.
@Suite("Magazine fast path (the process allocator's)")
struct MagazineFastPathTests {
    private func makeReportingSystem() throws -> MemorySystem {
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.logsEvents = false
        config.hardeningAction = .report
        let mm = try MemorySystem(config)
        mm._magazineFastPath.turnOnForMalloc()  // what libmmmalloc does at start (process-wide; only this type reads it)
        return mm
    }

    @Test("it pops and pushes the same magazines as allocate and deallocate")
    func sharesMagazines() throws {
        let mm = try makeReportingSystem()
        let fast = mm._magazineFastPath
        let p = try #require(mm.allocate(byteCount: 48))
        mm.deallocate(p)                                       // now on top of this thread's kmalloc-64 magazine
        let q = try #require(fast.allocate(byteCount: 50))     // the same class
        #expect(q == p)
        #expect(fast.free(q))
        #expect(mm.allocate(byteCount: 64) == p)               // and back through the system's own path
        mm.deallocate(p)
        #expect(fast.allocate(byteCount: 0) == nil && fast.allocate(byteCount: -1) == nil)
        #expect(fast.allocate(byteCount: MemorySystem.kmallocMaxSize + 1) == nil)
    }

    @Test("a pointer it refuses is one deallocate reports: double free, interior, foreign; nothing is lost")
    func refusalsAreReported() throws {
        let mm = try makeReportingSystem()
        let recorder = EventRecorder(mm)
        let fast = mm._magazineFastPath
        let p = try #require(fast.allocate(byteCount: 32) ?? mm.allocate(byteCount: 32))
        #expect(fast.free(p))
        #expect(!fast.free(p))                                  // a double free is refused…
        mm.deallocate(p)                                        // …and reported by the slow path
        let q = try #require(mm.allocate(byteCount: 32))
        #expect(!fast.free(q + 8))                              // interior
        mm.deallocate(q + 8)
        var local = 0
        let foreign = withUnsafeMutableBytes(of: &local) { $0.baseAddress! }
        #expect(!fast.free(foreign))                            // not in the arena at all
        #expect(recorder.violations.map(\.kind) == [.doubleFree, .interiorPointer], "\(recorder.violations)")
        #expect(fast.free(q))                                   // q itself was never freed: it still is freeable
    }

    @Test("the malloc slot closes inside the allocator, under an allocator lock and under a checked lock, and reopens after")
    func mallocSlotCloses() throws {
        let mm = try makeReportingSystem()
        let fast = mm._magazineFastPath
        let p = try #require(mm.allocate(byteCount: 48))
        mm.deallocate(p)                                        // a warm kmalloc-64 magazine; the record exists
        func served() -> Bool {
            guard let q = fast.allocate(byteCount: 64) else { return false }
            mm.deallocate(q)
            return true
        }
        #expect(served())
        _ProcessAllocatorThread.enter()
        _ProcessAllocatorThread.enter()
        #expect(!served(), "the malloc slot served a thread inside the allocator")
        #expect(fast.allocate(byteCount: 64, slot: .ordinary) != nil, "the ordinary slot is not the malloc slot's business")
        _ProcessAllocatorThread.leave()
        #expect(!served(), "one level out is still inside")
        _ProcessAllocatorThread.leave()
        #expect(served())
        ForkGate.enter()
        #expect(!served(), "the malloc slot served a thread holding an allocator lock")
        ForkGate.leave()
        #expect(served())
        let lock = ReclaimCheckedMutex(0, name: "malloc-slot-test")
        lock.withLock { _ in
            #expect(!served(), "the malloc slot served a thread holding a ReclaimCheckedMutex")
        }
        #expect(served())
    }

    @Test("nil and pages that are not a slab's are refused without a test of their own, and deallocate frees them")
    func nilAndPagesAreRefused() throws {
        #expect(_MagazineFastPath._headerLeavesSlotBoundZero,
                "the record header reaches the slot-bound word of magazine(owner: 0): free needs its owner test back")
        let mm = try makeReportingSystem()
        let recorder = EventRecorder(mm)
        let fast = mm._magazineFastPath
        let warm = try #require(mm.allocate(byteCount: 64))
        mm.deallocate(warm)                                     // the thread's record exists and is attached
        #expect(!fast.free(nil))
        #expect(!fast.free(nil, slot: .ordinary))
        let freeBefore = mm.statistics().freeBytes
        for order in [0, 1, 3] {
            let block = try #require(mm.allocatePages(order: order))
            #expect(!fast.free(block), "a page block (order \(order)) was pushed onto a magazine")
            #expect(!fast.free(block + 64), "an interior pointer of a page block (order \(order)) was pushed")
            mm.deallocate(block)
        }
        let big = try #require(mm.allocate(byteCount: 64 << 10))  // above the kmalloc classes: pages
        #expect(!fast.free(big, slot: .ordinary))
        mm.deallocate(big)
        #expect(recorder.violations.isEmpty, "\(recorder.violations)")
        #expect(mm.statistics().freeBytes == freeBefore, "a page block was lost")
        #expect(mm._invariantViolations().isEmpty, "\(mm._invariantViolations())")
    }

    @Test("usableSize answers a live object's class size and leaves everything else to the system, which names it")
    func usableSizeAnswersLiveObjectsOnly() throws {
        let mm = try makeReportingSystem()
        let recorder = EventRecorder(mm)
        let fast = mm._magazineFastPath
        for size in MemorySystem.kmallocSizes {
            let p = try #require(mm.allocate(byteCount: size))
            #expect(fast.usableSize(p) == size && mm.usableSize(of: p) == size)
            #expect(fast.usableSize(p + 8) == nil, "an interior pointer of a \(size)-byte object got a size")
            mm.deallocate(p)
            #expect(fast.usableSize(p) == nil, "a freed \(size)-byte object got a size")
        }
        #expect(fast.usableSize(nil) == nil)
        let block = try #require(mm.allocatePages(order: 1))
        #expect(fast.usableSize(block) == nil && mm.usableSize(of: block) == 2 * MemorySystem.pageSize)
        mm.deallocate(block)
        var local = 0
        withUnsafeMutableBytes(of: &local) { #expect(fast.usableSize($0.baseAddress!) == nil) }
        #expect(recorder.violations.isEmpty, "\(recorder.violations)")
        let q = try #require(mm.allocate(byteCount: 100))
        mm.deallocate(q)
        #expect(mm.usableSize(of: q) == 0)                       // what the fast path left: reported
        #expect(recorder.violations.map(\.kind) == [.doubleFree], "\(recorder.violations)")
    }

    @Test("a full magazine refuses the push; deallocate then drains it")
    func fullMagazine() throws {
        let mm = try makeReportingSystem()
        let recorder = EventRecorder(mm)
        let fast = mm._magazineFastPath
        let objects = (0..<3000).map { _ in mm.allocate(byteCount: 16)! }
        var refused = 0
        for p in objects where !fast.free(p) {
            refused += 1
            mm.deallocate(p)
        }
        #expect(refused > 0, "a magazine holds at most 1024 objects")
        #expect(recorder.violations.isEmpty)
    }
}

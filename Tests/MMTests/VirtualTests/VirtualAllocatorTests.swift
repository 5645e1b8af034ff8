// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Testing

@Suite("vmalloc and kvmalloc")
struct VirtualAllocatorTests {
    func inVmalloc(_ mm: MemorySystem, _ p: UnsafeRawPointer) -> Bool { mm.virtual.contains(p) }

    @Test("a virtual area larger than any contiguous block: usable, writable, and fully returned", arguments: [5 << 20, 12 << 20, 12345])
    func large(size: Int) throws {
        let mm = try makeSystem(capacity: 32 << 20)
        var policy = AllocationPolicy.standard
        policy.placement = .virtual
        let p = try #require(mm.allocate(byteCount: size, policy: policy))
        #expect(inVmalloc(mm, p))
        #expect(mm.usableSize(of: p) == (size + pageSize - 1) / pageSize * pageSize)
        let words = size / 8
        let w = p.bindMemory(to: UInt64.self, capacity: words)
        for i in stride(from: 0, to: words, by: 509) { w[i] = UInt64(i) }
        for i in stride(from: 0, to: words, by: 509) { #expect(w[i] == UInt64(i)) }
        #expect(mm.statistics().vmallocUsedBytes == mm.usableSize(of: p))
        mm.deallocate(p)
        mm.drainPerThreadLists()
        let s = mm.statistics()
        #expect(s.freeBytes == 32 << 20)
        #expect(s.vmallocUsedBytes == 0)
        #expect(s[counter: "vmalloc_mappings"] == 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("physically scattered pages, one virtual area: vmalloc works in a fragmented arena, holds no memory twice and returns it when freed")
    func scatteredAndReturned() throws {
        let mm = try makeSystem(capacity: 32 << 20, perThreadLists: false, releaseDelay: .zero)
        // Fragment: allocate every page down to min, free every other one.
        let pages = fillPages(mm, .standard)
        for (i, p) in pages.enumerated() where i % 2 == 0 { mm.freePages(p, order: 0) }
        let largeFree = mm.statistics().freeBlocksPerOrder.enumerated().dropFirst().reduce(0) { $0 + ($1.element << $1.offset) }
        #expect(largeFree * pageSize < 6 << 20, "no room for the area in blocks above order 0")
        let residentBefore = mm.statistics().residentBytes
        var policy = AllocationPolicy.standard
        policy.placement = .virtual
        let size = 6 << 20
        let p = try #require(mm.allocate(byteCount: size, policy: policy))
        memset(p, 0x5a, size)
        let info = mm.statistics().vmallocinfo
        let runs = info.split(separator: " ").first { $0.hasPrefix("runs=") }.flatMap { Int($0.dropFirst(5)) } ?? 0
        #expect(info.contains("pages=1536") && runs > 1024, "\(info)")   // frames from all over the arena
        let resident = mm.statistics().residentBytes
        #expect(resident - residentBefore >= size, "the area's memory is resident once")
        #expect(resident - residentBefore < size + (1 << 20), "and not twice (its frames' direct-map view was discarded)")
        mm.deallocate(p)
        #expect(mm.statistics().residentBytes <= residentBefore + (64 << 10), "freeing the area returned its memory")
        for (i, q) in pages.enumerated() where i % 2 == 1 { mm.freePages(q, order: 0) }
        #expect(mm._invariantViolations() == [])
    }

    @Test("pages are taken largest first and physically contiguous runs share one mapping")
    func runs() throws {
        let mm = try makeSystem(capacity: 32 << 20)
        var policy = AllocationPolicy.standard
        policy.placement = .virtual
        let p = try #require(mm.allocate(byteCount: 8 << 20, policy: policy))
        let info = mm.statistics().vmallocinfo
        #expect(info.contains("pages=2048 runs=1"), "\(info)")
        #expect(info.contains("VirtualAllocatorTests.swift"))
        mm.deallocate(p)
    }

    @Test("the mapping budget makes allocation fail cleanly before the kernel would refuse")
    func mapCount() throws {
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.logsEvents = false
        config.maxVirtualMappings = 3
        let mm = try MemorySystem(config)
        let recorder = EventRecorder(mm)
        var policy = AllocationPolicy.standard
        policy.placement = .virtual
        let a = try #require(mm.allocate(byteCount: 1 << 20, policy: policy))
        #expect(mm.allocate(byteCount: 1 << 20, policy: policy) == nil)
        #expect(recorder.failures.last?.reason.contains("vm.max_map_count") == true)
        #expect(mm.statistics()[counter: "vmalloc_fail_map_count"] == 1)
        mm.deallocate(a)
        let b = try #require(mm.allocate(byteCount: 1 << 20, policy: policy))  // the budget came back
        mm.deallocate(b)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 16 << 20)
    }

    @Test("automatic placement: contiguous when cheap, virtual when the arena is fragmented")
    func automatic() throws {
        let mm = try makeSystem(capacity: 8 << 20, perThreadLists: false)
        var policy = AllocationPolicy.standard
        policy.placement = .automatic
        let contiguous = try #require(mm.allocate(byteCount: 64 << 10, policy: policy))
        #expect(!inVmalloc(mm, contiguous))
        mm.deallocate(contiguous)
        // Fragment: every other page allocated, no free block above order 0.
        let all = withAllocationScope(.reclaiming) { fillPages(mm, .standard) }  // every page, down to 0
        for (i, p) in all.enumerated() where i % 2 == 0 { mm.freePages(p, order: 0) }
        let recorder = EventRecorder(mm)
        let fallback = try #require(mm.allocate(byteCount: 64 << 10, policy: policy))
        #expect(inVmalloc(mm, fallback))
        #expect(recorder.failures.isEmpty)  // the contiguous attempt fails silently
        mm.deallocate(fallback)
    }

    @Test("kvmalloc works in every context: guaranteed, in an excluding scope, zeroed")
    func everyContext() throws {
        let mm = try makeSystem(capacity: 32 << 20)
        let p = withAllocationScope(.excluding(.filesystem)) { mm.allocateGuaranteed(byteCount: 6 << 20) }
        #expect(inVmalloc(mm, p))
        mm.deallocate(p)
        var policy = AllocationPolicy.standard
        policy.placement = .virtual
        policy.zeroed = true
        let dirty = try #require(mm.allocate(byteCount: 1 << 20, policy: .init(placement: .virtual)))
        dirty.initializeMemory(as: UInt8.self, repeating: 0xEE, count: 1 << 20)
        mm.deallocate(dirty)
        let clean = try #require(mm.allocate(byteCount: 1 << 20, policy: policy))
        #expect(UnsafeRawBufferPointer(start: clean, count: 1 << 20).allSatisfy { $0 == 0 })
        mm.deallocate(clean)
    }

    @Test("bad frees in the vmalloc region are violations; nothing is lost", arguments: [0, 1, 2])
    func badFrees(kind: Int) throws {
        let mm = try makeSystem(capacity: 16 << 20, hardening: .report)
        let recorder = EventRecorder(mm)
        let p = try #require(mm.allocate(byteCount: 64 << 10, policy: .init(placement: .virtual)))
        switch kind {
        case 0: mm.deallocate(p + pageSize)
        case 1: mm.deallocate(p); mm.deallocate(p)
        default: mm.deallocate(p + (1 << 20))
        }
        let expected: HardeningViolation.Kind = [.interiorPointer, .doubleFree, .neverAllocated][kind]
        #expect(recorder.violations.map(\.kind) == [expected])
        if kind != 1 { mm.deallocate(p) }
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 16 << 20)
    }

    /// The fault is a SIGSEGV; under ThreadSanitizer, whose handler catches
    /// it, the process instead exits 66 after a "DEADLYSIGNAL … SEGV" report,
    /// which counts as the same fault.
    @Test("writing past a vmalloc area hits its guard page", arguments: ["overflow", "use-after-free"])
    func guardPage(_ what: String) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.exitStatus, \.standardErrorContent]) { [what = what as String] in
            let mm = try makeSystem(capacity: 16 << 20)
            let p = mm.allocate(byteCount: 3 * 4096, policy: .init(placement: .virtual))!
            if what == "overflow" {
                (p + 3 * 4096).storeBytes(of: 1, as: UInt8.self)
            } else {
                mm.deallocate(p)
                p.storeBytes(of: 1, as: UInt8.self)
            }
        }
        let report = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        let segfault = result?.exitStatus == .signal(SIGSEGV)
        let segfaultUnderTSan = result?.exitStatus == .exitCode(66) && report.contains("SEGV")
        #expect(segfault || segfaultUnderTSan, "\(String(describing: result?.exitStatus)): \(report)")
    }
}

@Suite("Concurrency: vmalloc stress", .timeLimit(.minutes(2)))
struct VirtualStressTests {
    @Test("two threads map and unmap areas of mixed sizes; contents stay intact, everything comes back")
    func twoThreads() throws {
        let mm = try makeSystem(capacity: 64 << 20, releaseDelay: .zero)
        let corrupted = Locked<Int>(0)
        runThreads(2) { t in
            var rng = SeededGenerator(seed: UInt64(t) + 99)
            var live: [(UnsafeMutableRawPointer, Int, UInt64)] = []
            for _ in 0..<600 {
                if live.count < 12 && rng.next() % 3 != 0 {
                    let size = Int(rng.next() % UInt64(3 << 20)) + 1
                    let placement: Placement = rng.next() % 2 == 0 ? .virtual : .automatic
                    if let p = mm.allocate(byteCount: size, policy: .init(persistence: .failFast, placement: placement)) {
                        let tag = rng.next()
                        p.storeBytes(of: tag, as: UInt64.self)
                        (p + (size - 1) / 8 * 8).storeBytes(of: tag, as: UInt64.self)
                        live.append((p, size, tag))
                    }
                } else if !live.isEmpty {
                    let (p, size, tag) = live.remove(at: Int(rng.next() % UInt64(live.count)))
                    if p.load(as: UInt64.self) != tag || (p + (size - 1) / 8 * 8).load(as: UInt64.self) != tag {
                        corrupted.withLock { $0 += 1 }
                    }
                    mm.deallocate(p)
                }
            }
            for (p, _, _) in live { mm.deallocate(p) }
        }
        #expect(corrupted.withLock { $0 } == 0)
        let s = mm.statistics()
        #expect(s.freeBytes == 64 << 20)
        #expect(s.vmallocUsedBytes == 0)
        #expect(mm._invariantViolations() == [])
    }
}

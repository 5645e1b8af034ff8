// SPDX-License-Identifier: Apache-2.0
import CMMShims
@testable import MM
import Testing

@Suite("Object caches and kmalloc")
struct ObjectCacheTests {
    @Test("every size up to 8 KiB goes to the smallest kmalloc class that holds it")
    func sizeClasses() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        for size in 1...kmallocMaxSize {
            let expected = kmallocSizes.first { $0 >= size }!
            #expect(kmallocSizes[SizeClass.index(forBytes: size)] == expected, "size \(size)")
        }
        // libmmmalloc's malloc reads the same table with bit 3 of `size - 1` set: the class of
        // max(size, 16), since malloc aligns to 16.
        for size in 1...1024 {
            #expect(Int(cmm_kmalloc_class_small((size - 1) | 8)) == SizeClass.index(forBytes: max(size, 16)), "malloc(\(size))")
        }
        for size in [1, 8, 9, 16, 17, 64, 65, 96, 97, 128, 129, 192, 193, 256, 257, 512, 1000, 2048, 4000, 8192] {
            let p = try #require(mm.allocate(byteCount: size))
            let usable = mm.usableSize(of: p)
            #expect(usable == kmallocSizes.first { $0 >= size }!)
            if usable & (usable - 1) == 0 { #expect(UInt(bitPattern: p) % UInt(usable) == 0, "kmalloc-\(usable) alignment") }
            p.initializeMemory(as: UInt8.self, repeating: 0xCD, count: usable)
            mm.deallocate(p)
        }
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 16 << 20)
        #expect(mm._invariantViolations() == [])
    }

    @Test("slabinfo counts active and total objects; freed slabs go back to the pages")
    func slabinfo() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let cache = try mm.makeObjectCache(name: "inode", size: 600, flags: [.reclaimable])
        #expect(cache.objectSize == 600)
        var held: [UnsafeMutableRawPointer] = []
        for i in 0..<1000 {
            let p = try #require(cache.allocate())
            p.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: i), count: 600)
            held.append(p)
        }
        let line = try #require(mm.statistics().slabCaches.first { $0.name == "inode" })
        #expect(line.activeObjects == 1000)
        #expect(line.objectSize == 600)
        #expect(line.pagesPerSlab == 1 && line.objectsPerSlab == 6)  // 6 × 600 wastes 496 bytes: under 1/8 of a page
        #expect(line.totalObjects >= 1000 && line.totalObjects == line.slabs * 6)
        let stats = mm.statistics()
        #expect(stats.meminfo.contains("SReclaimable:"))
        #expect(stats.reclaimableSlabBytes == line.slabs * pageSize)
        #expect(stats.slabinfo.contains("inode"))
        for (i, p) in held.enumerated() {
            #expect(UnsafeRawBufferPointer(start: p, count: 600).allSatisfy { $0 == UInt8(truncatingIfNeeded: i) })
        }
        for p in held { cache.deallocate(p) }
        #expect(mm.statistics().slabCaches.first { $0.name == "inode" }?.activeObjects == 0)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 16 << 20)
        #expect(cache.destroy() == 0)
    }

    @Test("destroying a cache reports each object still allocated and keeps its slab; later frees still work")
    func leaks() throws {
        let mm = try makeSystem(capacity: 8 << 20)
        let recorder = EventRecorder(mm)
        let cache = try mm.makeObjectCache(name: "buffer_head", size: 104)
        let objects = (0..<50).map { _ in cache.allocate()! }
        for p in objects[3...] { cache.deallocate(p) }
        #expect(cache.destroy() == 3)
        let leaks = recorder.violations.filter { $0.kind == .leakedObject }
        #expect(Set(leaks.map(\.pointer)) == Set(objects[..<3].map { UInt(bitPattern: $0) }))
        #expect(leaks.allSatisfy { $0.operation == "destroy() of buffer_head" })
        // Allocation from a destroyed cache fails cleanly.
        #expect(cache.allocate() == nil)
        #expect(recorder.invalidRequests.filter { $0.reason.contains("destroyed") }.count == 1,
                "one allocation from the destroyed cache, one report: \(recorder.invalidRequests)")
        // The leaked objects can still be freed; then the last slab goes back.
        for p in objects[..<3] { cache.deallocate(p) }
        // Frees after destroy take the checked path at once: no magazine keeps them, the slab is gone.
        let line = mm.statistics().slabCaches.first { $0.name == "buffer_head" }
        #expect(line?.slabs == 0 && line?.cachedInThreads == 0)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 8 << 20)
        #expect(mm._invariantViolations() == [])
    }

    @Test("bad cache parameters are refused with the field named", arguments: [
        ("", 64, 8, "name"), ("x", 0, 8, "size"), ("x", -8, 8, "size"), ("x", 64, 3, "alignment"),
        ("x", 64, 8192, "alignment"), ("x", 40_000, 8, "size"),
    ])
    func badParameters(name: String, size: Int, alignment: Int, field: String) throws {
        let mm = try makeSystem()
        #expect { _ = try mm.makeObjectCache(name: name, size: size, alignment: alignment) } throws: { error in
            (error as? ObjectCacheError)?.field == field
        }
    }

    @Test("alignment is honoured for custom caches")
    func alignment() throws {
        let mm = try makeSystem()
        let cache = try mm.makeObjectCache(name: "aligned", size: 72, alignment: 128)
        for _ in 0..<100 {
            let p = try #require(cache.allocate())
            #expect(UInt(bitPattern: p) % 128 == 0)
        }
    }

    @Test("zeroed objects are zero even when the slot held data before")
    func zeroed() throws {
        let mm = try makeSystem()
        let p = try #require(mm.allocate(byteCount: 200))
        p.initializeMemory(as: UInt8.self, repeating: 0xFF, count: 200)
        mm.deallocate(p)
        var policy = AllocationPolicy.standard
        policy.zeroed = true
        let q = try #require(mm.allocate(byteCount: 200, policy: policy))
        #expect(q == p)
        #expect(UnsafeRawBufferPointer(start: q, count: 256).allSatisfy { $0 == 0 })
    }

    @Test("reallocate: in place while the class allows, else moved with the contents; failure keeps the old memory")
    func reallocate() throws {
        let mm = try makeSystem(capacity: 8 << 20, hardening: .report)
        let recorder = EventRecorder(mm)
        let p = try #require(mm.reallocate(nil, byteCount: 40))
        #expect(mm.usableSize(of: p) == 64)
        for i in 0..<40 { p.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        #expect(mm.reallocate(p, byteCount: 64) == p)           // fits kmalloc-64: in place
        let q = try #require(mm.reallocate(p, byteCount: 3000))  // kmalloc-4k
        #expect(q != p)
        #expect((0..<40).allSatisfy { q.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) })
        let r = try #require(mm.reallocate(q, byteCount: 100_000))  // pages
        #expect((0..<40).allSatisfy { r.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) })
        #expect(mm.reallocate(r, byteCount: 0) == nil)           // invalid: nothing freed
        #expect(recorder.invalidRequests.count == 1)
        #expect(mm.reallocate(r, byteCount: 64 << 20) == nil)    // impossible: r untouched
        #expect(r.load(fromByteOffset: 39, as: UInt8.self) == 39)
        mm.deallocate(r)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 8 << 20)
    }

    @Test("model: 20 000 random kmalloc and cache operations keep every live object intact and lose nothing")
    func model() throws {
        let mm = try makeSystem(capacity: 32 << 20)
        let caches = try [mm.makeObjectCache(name: "a", size: 24), mm.makeObjectCache(name: "b", size: 700, alignment: 64),
                          mm.makeObjectCache(name: "c", size: 3000)]
        var rng = SeededGenerator(seed: 42)
        var live: [(p: UnsafeMutableRawPointer, size: Int, tag: UInt64, cache: Int?)] = []
        for step in 0..<20_000 {
            if live.isEmpty || Int.random(in: 0..<100, using: &rng) < 55 {
                let tag = UInt64(step)
                if Bool.random(using: &rng) {
                    let size = [8, 24, 100, 300, 1000, 5000, 8192, 9000][Int.random(in: 0..<8, using: &rng)]
                    let p = mm.allocate(byteCount: size)!
                    (p + (size - 1)).storeBytes(of: UInt8(truncatingIfNeeded: tag), as: UInt8.self)
                    p.storeBytes(of: tag, as: UInt64.self)  // for 8-byte objects this covers the last byte
                    live.append((p, size, tag, nil))
                } else {
                    let c = Int.random(in: 0..<3, using: &rng)
                    let p = caches[c].allocate()!
                    p.storeBytes(of: tag, as: UInt64.self)
                    live.append((p, caches[c].objectSize, tag, c))
                }
            } else {
                let i = Int.random(in: 0..<live.count, using: &rng)
                live.swapAt(i, live.count - 1)
                let e = live.removeLast()
                #expect(e.p.load(as: UInt64.self) == e.tag)
                if let c = e.cache { caches[c].deallocate(e.p) } else {
                    #expect(e.size == 8 || (e.p + (e.size - 1)).load(as: UInt8.self) == UInt8(truncatingIfNeeded: e.tag))
                    mm.deallocate(e.p)
                }
            }
        }
        let active = mm.statistics().slabCaches.reduce(0) { $0 + $1.activeObjects }
        #expect(active == live.filter { $0.size <= kmallocMaxSize }.count)
        for e in live {
            if let c = e.cache { caches[c].deallocate(e.p) } else { mm.deallocate(e.p) }
        }
        for c in caches { #expect(c.destroy() == 0) }
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 32 << 20)
        #expect(mm._invariantViolations() == [])
    }

    @Test("reclaim returns cached objects and empty slabs to the page allocator")
    func reclaim() throws {
        let mm = try makeSystem(capacity: 8 << 20)
        let held = (0..<5000).map { _ in mm.allocate(byteCount: 100)! }
        let slabBytes = mm.statistics().slabBytes
        #expect(slabBytes >= 5000 * 128)
        for p in held { mm.deallocate(p) }
        #expect(mm.statistics().slabBytes > 0)  // freed objects sit in magazines and slabs
        // Most empty slabs went back as the depot overflowed; reclaim returns the rest.
        #expect(mm.reclaim(bytes: 8 << 20) > 0)
        #expect(mm.statistics().slabCaches.first { $0.name == "kmalloc-128" }?.slabs == 0)
        #expect(mm.statistics().slabBytes == 0)
        #expect(mm.statistics().freeBytes == 8 << 20)
    }

    @Test("allocinfo: live bytes and calls per call site when profiling is on")
    func allocinfo() throws {
        var config = MemoryConfiguration(capacity: 8 << 20)
        config.logsEvents = false
        config.allocationProfiling = true
        let mm = try MemorySystem(config)
        var held: [UnsafeMutableRawPointer] = []
        for _ in 0..<10 { held.append(mm.allocate(byteCount: 100)!) }      // line A
        let big = mm.allocate(byteCount: 3 * pageSize)!                     // line B
        let virtualArea = mm.allocate(byteCount: 5 << 20, policy: { var p = AllocationPolicy.standard; p.placement = .virtual; return p }())!
        let sites = try #require(mm.statistics().allocationSites)
        let a = try #require(sites.first { $0.calls == 10 })
        #expect(a.bytes == 10 * 128)
        #expect(a.site.file.hasSuffix("ObjectCacheTests.swift"))
        #expect(sites.contains { $0.bytes == 4 * pageSize && $0.calls == 1 })
        #expect(sites.contains { $0.bytes == 5 << 20 && $0.calls == 1 })
        for p in held.prefix(4) { mm.deallocate(p) }
        mm.deallocate(big)
        mm.deallocate(virtualArea)
        let after = try #require(mm.statistics().allocationSites)
        #expect(after.first { $0.site == a.site }?.calls == 6)
        #expect(after.first { $0.site == a.site }?.bytes == 6 * 128)
        #expect(mm.statistics().allocinfo.contains("ObjectCacheTests.swift"))
        #expect(try makeSystem().statistics().allocinfo.contains("off"))
    }

    @Test("fault injection can target one cache by name")
    func faultInjectionByCache() throws {
        var config = MemoryConfiguration(capacity: 8 << 20)
        config.logsEvents = false
        var faults = FaultInjection()
        faults.caches = ["kmalloc-64"]
        config.faultInjection = faults
        let mm = try MemorySystem(config)
        #expect(mm.allocate(byteCount: 64) == nil)
        #expect(mm.allocate(byteCount: 65) != nil)   // kmalloc-96
        #expect(mm.allocatePages(order: 0) != nil)
        #expect(mm.allocateGuaranteed(byteCount: 64) != UnsafeMutableRawPointer(bitPattern: 0))  // never injected
        #expect(mm.statistics()[counter: "fault_injected"] == 1)
    }

    @Test("charged small allocations are accounted to their group")
    func charged() throws {
        let mm = try makeSystem()
        let group = mm.makeGroup(name: "tenant")
        let p = try #require(withAllocationScope(.charging(group)) { mm.allocate(byteCount: 100) })
        #expect(group.usage >= 100)
        mm.deallocate(p)
        #expect(group.usage == 0)
    }
}

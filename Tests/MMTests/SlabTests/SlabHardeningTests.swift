// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

/// Bad frees and memory errors on objects: trapped by default (exit tests),
/// or reported with nothing freed or lost.
@Suite("Slab hardening")
struct SlabHardeningTests {
    enum BadObjectFree: String, CaseIterable, Codable, Sendable {
        case doubleFree, doubleFreeOneWord, doubleFreeAfterDrain, interior, slabTail, misaligned, neverAllocated,
             neverAllocatedSmallest, wrongCache, pagesAsObject, objectAsPages, redZone

        var expectedKind: HardeningViolation.Kind {
            switch self {
            case .doubleFree, .doubleFreeOneWord, .doubleFreeAfterDrain: return .doubleFree
            case .interior, .slabTail: return .interiorPointer
            case .misaligned: return .misalignedPointer
            case .neverAllocated, .neverAllocatedSmallest: return .neverAllocated
            case .wrongCache: return .wrongCache
            case .pagesAsObject: return .interiorPointer
            case .objectAsPages: return .wrongAllocator
            case .redZone: return .redZoneOverwritten
            }
        }

        func perform(on mm: MemorySystem) {
            switch self {
            case .doubleFree:
                let p = mm.allocate(byteCount: 64)!
                mm.deallocate(p)
                mm.deallocate(p)
            case .doubleFreeOneWord:
                let p = mm.allocate(byteCount: 8)!
                mm.deallocate(p)
                mm.deallocate(p)
            case .doubleFreeAfterDrain:
                // The first free lands on the slab's free list (encoded link), not in a magazine.
                let p = mm.allocate(byteCount: 8)!
                let keep = mm.allocate(byteCount: 8)!  // keeps the slab alive
                mm.deallocate(p)
                mm.shrinkObjectCaches()
                mm.deallocate(p)
                _ = keep
            case .interior:
                let p = mm.allocate(byteCount: 256)!
                mm.deallocate(p + 64)
            case .slabTail:
                // A multiple of the stride past the last slot: 4096 = 42 × 96 + 64, so kmalloc-96's
                // slab ends in a 64-byte tail that starts where a 43rd slot would.
                let p = mm.allocate(byteCount: 96)!
                let layout = mm.slab.layouts[SizeClass.index(forBytes: 96)]
                let tail = (UInt(bitPattern: p) & ~layout.slabMask) + UInt(layout.objectsPerSlab * layout.stride)
                precondition(layout.stride == 96 && Int(layout.slabMask) + 1 > layout.objectsPerSlab * layout.stride)
                mm.deallocate(UnsafeMutableRawPointer(bitPattern: tail)!)
            case .misaligned:
                let p = mm.allocate(byteCount: 256)!
                mm.deallocate(p + 3)
            case .neverAllocated:
                let p = mm.allocate(byteCount: 128)!
                mm.deallocate(p + 128)  // the next slot: carved, never handed out
            case .neverAllocatedSmallest:
                // 8-byte objects sit 16 bytes apart: the next slot has a canary word of its own.
                let p = mm.allocate(byteCount: 8)!
                mm.shrinkObjectCaches()
                mm.deallocate(p + 16)
            case .wrongCache:
                let cache = try! mm.makeObjectCache(name: "dentry", size: 192)
                let p = mm.allocate(byteCount: 192)!
                cache.deallocate(p)
            case .pagesAsObject:
                // A page block pointer plus an offset is not an object.
                let p = mm.allocate(byteCount: 3 * pageSize)!
                mm.deallocate(p + 64)
            case .objectAsPages:
                let p = mm.allocate(byteCount: 4096)!  // kmalloc-4k: one object per page
                mm.freePages(p, order: 0)
            case .redZone:
                let cache = try! mm.makeObjectCache(name: "packet", size: 100, flags: [.redZone])
                let p = cache.allocate()!
                p.storeBytes(of: 0x41, toByteOffset: 100, as: UInt8.self)  // one byte past the end
                cache.deallocate(p)
            }
        }
    }

    @Test("each bad object free traps by default, naming the pointer, the cache and the problem",
          arguments: BadObjectFree.allCases)
    func traps(_ bad: BadObjectFree) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [bad = bad as BadObjectFree] in
            let mm = try makeSystem()
            bad.perform(on: mm)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("hardening violation: \(bad.expectedKind.rawValue)"), "\(stderr)")
        #expect(stderr.contains("0x"))
    }

    @Test("in report mode each bad object free is one event, and nothing is lost", arguments: BadObjectFree.allCases)
    func reports(_ bad: BadObjectFree) throws {
        let mm = try makeSystem(hardening: .report)
        let recorder = EventRecorder(mm)
        bad.perform(on: mm)
        #expect(recorder.violations.map(\.kind) == [bad.expectedKind], "\(recorder.violations)")
        #expect(mm._invariantViolations() == [])
    }

    @Test("a write after free to a poisoned object is caught at its next allocation")
    func poison() throws {
        let mm = try makeSystem(hardening: .report)
        let recorder = EventRecorder(mm)
        let cache = try mm.makeObjectCache(name: "request", size: 64, flags: [.poison])
        let p = try #require(cache.allocate())
        cache.deallocate(p)
        p.storeBytes(of: 0xDEAD, toByteOffset: 40, as: UInt16.self)  // use after free
        let q = try #require(cache.allocate())
        #expect(q == p)  // the checked path hands the same slot back (LIFO)
        let v = try #require(recorder.violations.first)
        #expect(v.kind == .writeAfterFree)
        #expect(v.detail.contains("byte 40"))
        cache.deallocate(q)
    }

    @Test("kmallocDebugFlags: plain byte allocations get red zones and poison; .reclaimable is refused")
    func kmallocDebug() throws {
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.logsEvents = false
        config.hardeningAction = .report
        config.kmallocDebugFlags = [.redZone, .poison]
        let mm = try MemorySystem(config)
        let recorder = EventRecorder(mm)
        // A one-byte overflow of a 64-byte allocation: caught at its free.
        let p = try #require(mm.allocate(byteCount: 64))
        p.storeBytes(of: 0x41, toByteOffset: 64, as: UInt8.self)
        mm.deallocate(p)
        #expect(recorder.violations.map(\.kind) == [.redZoneOverwritten], "\(recorder.violations)")
        // A write after free: caught when the slot is handed out again.
        let q = try #require(mm.allocate(byteCount: 100))
        mm.deallocate(q)
        q.storeBytes(of: 0x42, toByteOffset: 40, as: UInt8.self)  // bytes 0-15 hold the free-list link and canary
        let r = try #require(mm.allocate(byteCount: 100))
        #expect(r == q)
        #expect(recorder.violations.last?.kind == .writeAfterFree, "\(recorder.violations)")
        mm.deallocate(r)
        // Without the flags, the same overflow goes unseen on the fast path.
        config.kmallocDebugFlags = []
        let plain = try MemorySystem(config)
        let plainRecorder = EventRecorder(plain)
        let s = try #require(plain.allocate(byteCount: 64))
        plain.deallocate(s)
        #expect(plainRecorder.violations.isEmpty)
        config.kmallocDebugFlags = [.reclaimable]
        #expect(throws: ConfigurationError.self) { _ = try MemorySystem(config) }
    }

    @Test("a write after free traps by default")
    func poisonTraps() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let mm = try makeSystem()
            let cache = try mm.makeObjectCache(name: "request", size: 64, flags: [.poison])
            let p = cache.allocate()!
            cache.deallocate(p)
            p.storeBytes(of: 1, toByteOffset: 20, as: UInt8.self)
            _ = cache.allocate()
        }
    }

    @Test("a corrupted free-list link is detected (it is encoded with the cache secret and the slot address)")
    func freeListCorruption() throws {
        let mm = try makeSystem(hardening: .report)
        let recorder = EventRecorder(mm)
        let cache = try mm.makeObjectCache(name: "node", size: 32, flags: [.zeroOnFree])
        let a = try #require(cache.allocate())
        let b = try #require(cache.allocate())
        cache.deallocate(a)
        // The free object's first word is its encoded link; an attacker's plain pointer decodes to garbage.
        a.storeBytes(of: UInt(bitPattern: b), as: UInt.self)
        _ = cache.allocate()  // pops a: fine, its own slot
        _ = cache.allocate()  // follows the corrupted link
        #expect(recorder.violations.contains { $0.kind == .freeListCorrupted }, "\(recorder.violations)")
    }

    @Test("zeroOnFree leaves no data behind in a freed object")
    func zeroOnFree() throws {
        let mm = try makeSystem()
        let cache = try mm.makeObjectCache(name: "secret", size: 256, flags: [.zeroOnFree])
        let p = try #require(cache.allocate())
        p.initializeMemory(as: UInt8.self, repeating: 0xAB, count: 256)
        cache.deallocate(p)
        // Bytes past the free-list link and canary words are zero.
        let bytes = UnsafeRawBufferPointer(start: p + 16, count: 240)
        #expect(bytes.allSatisfy { $0 == 0 })
    }
}

@Suite("Double frees after the object's memory moved on")
struct LateDoubleFreeTests {
    @Test("a double free after the magazine was drained, or after the slab went back to the page allocator, is a doubleFree",
          arguments: [8, 64, 1000, 8192])
    func lateDoubleFree(size: Int) throws {
        // Slab returned to the buddy allocator.
        let mm = try makeSystem(capacity: 16 << 20, hardening: .report)
        let recorder = EventRecorder(mm)
        let p = try #require(mm.allocate(byteCount: size))
        mm.deallocate(p)
        mm.drainPerThreadLists()
        mm.deallocate(p)
        #expect(recorder.violations.map(\.kind) == [.doubleFree], "\(recorder.violations)")
        // Magazine drained into the depot; the slab stays.
        let other = try makeSystem(capacity: 16 << 20, hardening: .report)
        let otherRecorder = EventRecorder(other)
        var keep: [UnsafeMutableRawPointer] = []
        for _ in 0..<300 { keep.append(try #require(other.allocate(byteCount: size))) }
        let q = keep.removeLast()
        other.deallocate(q)
        other.shrinkObjectCaches()   // the magazine goes back; the slab still holds live objects
        other.deallocate(q)
        #expect(otherRecorder.violations.map(\.kind) == [.doubleFree], "\(otherRecorder.violations)")
        for k in keep { other.deallocate(k) }
    }
}

// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

@Suite("Policies and byte allocations")
struct PolicyAndBytesTests {
    @Test("a non-blocking policy with a retry persistence has no meaning and is rejected at construction")
    func incoherentPolicy() {
        #expect(throws: PolicyError.self) {
            _ = try AllocationPolicy(validating: false, persistence: .failFast)
        }
        #expect(throws: Never.self) {
            _ = try AllocationPolicy(validating: false, reserve: .high)
        }
        for preset in [AllocationPolicy.standard, .failFast, .retryWhileProgress, .nonBlocking, .atomic] {
            #expect(throws: Never.self) { try preset.validate() }
        }
    }

    @Test("an incoherent policy made by mutation is refused at use: nil and an invalidRequest event")
    func incoherentAtUse() throws {
        let mm = try makeSystem()
        let recorder = EventRecorder(mm)
        var policy = AllocationPolicy.nonBlocking
        policy.persistence = .retryWhileProgress
        #expect(mm.allocate(byteCount: 64, policy: policy) == nil)
        #expect(mm.allocatePages(order: 0, policy: policy) == nil)
        #expect(recorder.invalidRequests.count == 2)
        #expect(recorder.invalidRequests.first?.reason.contains("non-blocking request never reclaims") == true)
        #expect(recorder.invalidRequests.first?.site?.file.contains("PolicyAndBytesTests") == true)
        #expect(mm.statistics().freeBytes == 4 << 20)
    }

    @Test("policies describe themselves in words, like %pGg")
    func policyWords() {
        #expect(AllocationPolicy.standard.description == "blocking|standard")
        #expect(AllocationPolicy.atomic.description == "nonblocking|reserve=high")
        #expect(AllocationPolicy.nonBlocking.description == "nonblocking|nowarn")
        var p = AllocationPolicy.failFast
        p.zeroed = true
        p.placement = .contiguous
        #expect(p.description == "blocking|failFast|zeroed|contiguous")
    }

    @Test("every preset places with kvmalloc (.automatic): any size from 1 byte to the capacity works with the defaults",
          arguments: [1, 4097, 5 << 20, 8 << 20, 20 << 20])
    func anySizeWithDefaults(size: Int) throws {
        for preset in [AllocationPolicy.standard, .failFast, .retryWhileProgress, .nonBlocking, .atomic] {
            #expect(preset.placement == .automatic)
        }
        let mm = try makeSystem(capacity: 32 << 20)
        let recorder = EventRecorder(mm)
        let p = try #require(mm.allocate(byteCount: size), "\(recorder.events)")
        #expect(mm.usableSize(of: p) >= size)
        p.storeBytes(of: 0xfeed, toByteOffset: size & ~7 == size ? max(0, size - 8) : 0, as: UInt64.self)
        mm.deallocate(p)
        #expect(recorder.invalidRequests.isEmpty)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 32 << 20)
    }

    @Test("byte sizes round up to a kmalloc class or to pages, and deallocate finds the size itself",
          arguments: [1, 16, 4095, 4096, 4097, 12_000, 65_536, 1 << 20, (4 << 20) - 1, 4 << 20])
    func bytes(size: Int) throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let p = try #require(mm.allocate(byteCount: size))
        let usable = mm.usableSize(of: p)
        #expect(usable >= size)
        #expect(usable < max(2 * size, pageSize) + 1)
        p.initializeMemory(as: UInt8.self, repeating: 0x5A, count: size)
        mm.deallocate(p)
        mm.drainPerThreadLists()
        #expect(mm.statistics().freeBytes == 16 << 20)
        #expect(mm._invariantViolations() == [])
    }

    @Test("zero, negative, overflowing and oversized requests: nil and an event naming the reason", arguments: [
        (0, "zero-byte"), (-1, "negative"), (Int.min, "negative"), (Int.max, "more than the whole arena"),
        ((16 << 20) + 1, "more than the whole arena"), ((4 << 20) + 1, "blocks of at most"),
    ])
    func badSizes(size: Int, reason: String) throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let recorder = EventRecorder(mm)
        // Contiguous memory has a size limit; the default placement (kvmalloc) has none below capacity.
        var policy = AllocationPolicy.standard
        if reason == "blocks of at most" { policy.placement = .contiguous }
        #expect(mm.allocate(byteCount: size, policy: policy) == nil)
        let event = try #require(recorder.invalidRequests.first)
        #expect(event.reason.contains(reason), "\(event.reason)")
        #expect(event.operation == "allocate(byteCount: \(size))")
        #expect(mm.statistics().freeBytes == 16 << 20)
    }

    @Test("deallocate and usableSize reject pointers that are not live allocations", arguments: [0, 1, 2])
    func badDeallocate(kind: Int) throws {
        let mm = try makeSystem(hardening: .report)
        let recorder = EventRecorder(mm)
        let p = try #require(mm.allocate(byteCount: 8192))
        switch kind {
        case 0: mm.deallocate(p + 16)                                   // interior
        case 1: mm.deallocate(p); mm.deallocate(p)                      // double free
        default: #expect(mm.usableSize(of: UnsafeRawPointer(bitPattern: 0x1000)!) == 0)  // foreign
        }
        let expected: HardeningViolation.Kind = [.interiorPointer, .doubleFree, .foreignPointer][kind]
        #expect(recorder.violations.map(\.kind) == [expected])
        #expect(mm._invariantViolations() == [])
    }

    @Test("guaranteed requests that can never be met trap at once, naming the call site", arguments: [0, -5, Int.max])
    func impossibleGuaranteed(size: Int) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [size = size as Int] in
            let mm = try makeSystem()
            _ = mm.allocateGuaranteed(byteCount: size)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("allocateGuaranteed(byteCount: \(size), .retryForever) at MMTests/PolicyAndBytesTests.swift:"), "\(stderr)")
        #expect(stderr.contains("can never be met"))
    }

    @Test("a call site is the same value whether made from #fileID or from a String; its file can be renamed")
    func callSites() {
        let literal = CallSite(#fileID, 42)
        let text = CallSite(file: "MMTests/PolicyAndBytesTests.swift", line: 42)
        #expect(literal == text && literal.hashValue == text.hashValue)
        #expect(literal.file == "MMTests/PolicyAndBytesTests.swift" && literal.description == "MMTests/PolicyAndBytesTests.swift:42")
        #expect(literal != CallSite(#fileID, 43) && literal != CallSite(file: "MMTests/Other.swift", line: 42))
        var renamed = literal
        renamed.file = "scenario"
        #expect(renamed.file == "scenario" && renamed.line == 42 && renamed == CallSite(file: "scenario", line: 42))
        #expect(Set([literal, text, renamed]).count == 2)
        #expect(CallSite(file: "", line: 0).description == ":0")
    }
}

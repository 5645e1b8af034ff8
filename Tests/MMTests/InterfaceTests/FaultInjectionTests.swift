// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

@Suite("Fault injection")
struct FaultInjectionTests {
    func system(_ faults: FaultInjection?) throws -> MemorySystem {
        var config = MemoryConfiguration(capacity: 8 << 20)
        config.logsEvents = false
        config.faultInjection = faults
        return try MemorySystem(config)
    }

    /// A compound operation in the style of SQLite's malloc tests: it
    /// allocates several buffers and, if any allocation fails, frees what it
    /// had and reports failure. Returns whether it completed.
    func compoundOperation(_ mm: MemorySystem) -> Bool {
        var held: [UnsafeMutableRawPointer] = []
        defer { for p in held { mm.deallocate(p) } }
        for size in [64, 4096, 300, 20_000, 8, 100_000, 512] {
            guard let p = mm.allocate(byteCount: size) else { return false }
            held.append(p)
        }
        held.append(mm.allocateGuaranteed(byteCount: 128))  // never failed by injection
        return true
    }

    @Test("SQLite-style loop: fail the Nth allocation for N = 1, 2, … until the operation completes; nothing leaks")
    func failNthLoop() throws {
        let mm = try system(nil)
        var n = 1
        while true {
            mm.failNthAllocation(n)
            let completed = compoundOperation(mm)
            mm.failNthAllocation(0)
            mm.drainPerThreadLists()
            #expect(mm.statistics().freeBytes == 8 << 20, "leak after failing allocation \(n)")
            #expect(mm._invariantViolations() == [])
            if completed { break }
            n += 1
            try #require(n < 50, "the operation never completed")
        }
        #expect(n == 8)  // seven fallible allocations failed in turn, the eighth run completed
        #expect(mm.statistics()[counter: "fault_injected"] == 7)
    }

    @Test("fail-nth is per thread and per system; the fast path is closed only while armed")
    func failNthScope() throws {
        let a = try system(nil)
        let b = try system(nil)
        a.failNthAllocation(1)
        let other = BackgroundThread { precondition(a.allocate(byteCount: 64) != nil) }
        other.join()
        #expect(b.allocate(byteCount: 64) != nil)
        #expect(a.allocate(byteCount: 64) == nil)
        #expect(a.allocate(byteCount: 64) != nil)
        // Open again (unless another test's charging scope, which closes every gate, is active now).
        #expect(ChargingScopes.isActive || a.pages.gate.pageThreshold.pointee.load(ordering: .relaxed) == a.pages.watermarks.low)
    }

    @Test("interval and times: every 3rd call fails, at most twice")
    func intervalTimes() throws {
        var f = FaultInjection()
        f.interval = 3
        f.times = 2
        let mm = try system(f)
        let results = (0..<12).map { _ in mm.allocate(byteCount: 64) }
        #expect(results.map { $0 == nil } == [false, false, true, false, false, true, false, false, false, false, false, false])
        for p in results.compactMap({ $0 }) { mm.deallocate(p) }
    }

    @Test("space: failures start once the budget of bytes is spent")
    func space() throws {
        var f = FaultInjection()
        f.space = 10_000
        let mm = try system(f)
        #expect(mm.allocate(byteCount: 6000) != nil)
        #expect(mm.allocate(byteCount: 6000) != nil)   // budget now spent
        #expect(mm.allocate(byteCount: 10) == nil)
    }

    @Test("call-site filter: only matching sites fail")
    func callSites() throws {
        var f = FaultInjection()
        f.callSites = ["FaultInjectionTests.swift:\(#line + 3)"]
        let mm = try system(f)
        #expect(mm.allocate(byteCount: 64) != nil)
        #expect(mm.allocate(byteCount: 64) == nil)
    }

    @Test("probability is seeded: the same seed fails the same calls")
    func probability() throws {
        var f = FaultInjection()
        f.probability = 0.3
        f.seed = 42
        func pattern() throws -> [Bool] {
            let mm = try system(f)
            return (0..<200).map { _ in mm.allocate(byteCount: 16, policy: .nonBlocking) == nil }
        }
        let first = try pattern()
        #expect(first == (try pattern()))
        let failures = first.filter { $0 }.count
        #expect(failures > 30 && failures < 90)
    }

    @Test("guaranteed requests — by call or by scope — are never failed by injection")
    func guaranteedExempt() throws {
        let mm = try system(FaultInjection())
        #expect(mm.allocate(byteCount: 64) == nil)
        let p = mm.allocateGuaranteed(byteCount: 64)
        let q = withAllocationScope(.retryForever) { mm.allocate(byteCount: 64) }
        #expect(q != nil)
        mm.deallocate(p)
    }

    @Test("invalid fault-injection settings are refused")
    func invalid() {
        var f = FaultInjection()
        f.probability = 1.5
        #expect(throws: ConfigurationError.self) { _ = try system(f) }
        f = FaultInjection()
        f.interval = 0
        #expect(throws: ConfigurationError.self) { _ = try system(f) }
    }
}

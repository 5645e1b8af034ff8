// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Synchronization
import Testing

@Suite("Shrinker deadline", .timeLimit(.minutes(1)))
struct ShrinkerDeadlineTests {
    @Test("a shrinker that blocks cannot hold up an allocation: reclaim goes on after the deadline, reports it once, and calls it again once it returned")
    func blockedShrinker() throws {
        let mm = try makeExactSystem { $0.shrinkerDeadline = .milliseconds(50) }
        let recorder = EventRecorder(mm)
        let released = Atomic<Bool>(false)
        let blockedScans = Atomic<Int>(0)
        // This cache's scans wait until the test releases them (a shrinker stuck on I/O or a lock).
        let stuck = TestCache(mm, name: "stuck") {
            blockedScans.wrappingAdd(1, ordering: .relaxed)
            while !released.load(ordering: .acquiring) { usleep(1000) }
            return true
        }
        let quick = TestCache(mm, name: "quick")
        _ = mm.registerShrinker(stuck)
        _ = mm.registerShrinker(quick)
        stuck.fill(300)
        quick.fill(2000)   // the rest of memory, down to min
        var got: [UnsafeMutableRawPointer] = []
        // Each of these needs direct reclaim; none may wait for the stuck shrinker (without the
        // deadline the first one would never return: the watchdog would fail the test).
        let box = UnsafeSendableBox(got)
        let finished = watchdog("allocations with a stuck shrinker", seconds: 20) {
            for _ in 0..<3 { if let p = mm.allocatePages(order: 0, policy: .standard) { box.value.append(p) } }
        }
        got = box.value
        #expect(got.count == 3)
        #expect(finished)
        #expect(blockedScans.load(ordering: .relaxed) == 1, "the stuck shrinker was called again while its call was still running")
        let stillBlocked = !released.load(ordering: .relaxed)
        #expect(stillBlocked)
        let reports = recorder.events.compactMap { if case .slowShrinker(let s) = $0 { return s } else { return nil } }
        #expect(reports.count == 1 && reports.first?.shrinker == "stuck", "\(reports)")
        // Once it returns, reclaim calls it again.
        released.store(true, ordering: .releasing)
        let before = stuck.scanCount
        for _ in 0..<200 where stuck.scanCount == before {
            _ = mm.reclaim(bytes: 1 << 20)
            usleep(2000)
        }
        #expect(stuck.scanCount > before)
        for p in got { mm.freePages(p, order: 0) }
        stuck.clear()
        quick.clear()
    }
}

/// A mutable box to move a value into and out of a @Sendable closure in a test.
final class UnsafeSendableBox<Value>: @unchecked Sendable {  // used by one thread at a time (the watchdog joins)
    var value: Value
    init(_ value: Value) { self.value = value }
}

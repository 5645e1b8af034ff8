// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

/// The slow-path steps (README, "The slow path"), each observable through the reclaim
/// hooks, the counters and the events.
@Suite("Slow path steps", .timeLimit(.minutes(1)))
struct SlowPathTests {
    @Test("step 6: failFast fails after exactly one reclaim round")
    func failFast() throws {
        let mm = try makeExactSystem()
        let hooks = HookCounter(mm, progress: 1)
        _ = fillPages(mm, .atomic)
        #expect(mm.allocate(byteCount: 4096, policy: .failFast) == nil)
        #expect(hooks.reclaimCount == 1)
        #expect(hooks.oomCount == 0)
        #expect(mm.statistics()[counter: "fail_failfast"] == 1)
    }

    @Test("step 7: retryWhileProgress loops while reclaim progresses, at most maxReclaimRetries, and never OOMs")
    func retryWhileProgress() throws {
        let mm = try makeExactSystem { $0.maxReclaimRetries = 16 }
        let progressing = HookCounter(mm, progress: 1)
        _ = fillPages(mm, .atomic)
        #expect(mm.allocate(byteCount: 4096, policy: .retryWhileProgress) == nil)
        #expect(progressing.reclaimCount == 16)
        #expect(progressing.oomCount == 0)
        let stuck = HookCounter(mm, progress: 0)
        #expect(mm.allocate(byteCount: 4096, policy: .retryWhileProgress) == nil)
        #expect(stuck.reclaimCount == 1)  // no progress: stop at once
    }

    @Test("step 8: standard retries like 7, then invokes the OOM handler once, then fails")
    func standard() throws {
        let mm = try makeExactSystem { $0.maxReclaimRetries = 4 }
        let recorder = EventRecorder(mm)
        let hooks = HookCounter(mm, progress: 1)
        _ = fillPages(mm, .atomic)
        #expect(mm.allocate(byteCount: 4096, policy: .standard) == nil)
        #expect(hooks.reclaimCount == 4)
        #expect(hooks.oomCount == 1)
        #expect(recorder.failures.last?.reason.contains("OOM handler found no victim") == true)
        #expect(mm.statistics()[counter: "fail_standard"] == 1)
    }

    @Test("step 8: after an OOM kill the request waits for the victim's memory and succeeds")
    func standardAfterKill() throws {
        let mm = try makeExactSystem()
        let held = fillPages(mm, .atomic)
        // The victim holds enough to lift free memory from min/4 back above min.
        let victimMemory = Locked<[UInt]>(held.suffix(200).map { UInt(bitPattern: $0) })
        let killed = BackgroundWorker()
        _ = HookCounter(mm, progress: 0) {
            // The "victim" releases its memory on another thread, soon.
            killed.run {
                sleep(milliseconds: 20)
                for a in victimMemory.withLock({ $0 }) { mm.freePages(UnsafeMutableRawPointer(bitPattern: a)!, order: 0) }
            }
            return .killed(victim: "test")
        }
        let succeeded = Atomic<Bool>(false)
        watchdog("a .standard request after an OOM kill") {
            if let p = mm.allocate(byteCount: 4096, policy: .standard) {
                succeeded.store(true, ordering: .relaxed)
                mm.deallocate(p)
            }
        }
        killed.join()
        let didSucceed = succeeded.load(ordering: .relaxed)
        #expect(didSucceed)
    }

    @Test("step 9: retryForever blocks on an exhausted arena, never touches reserves, reports stalls, completes when memory is freed")
    func retryForever() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        _ = HookCounter(mm)
        let held = fillPages(mm, .standard)  // exactly at min
        let result = Locked<UInt>(0)
        let waiter = BackgroundThread { result.withLock { $0 = UInt(bitPattern: mm.allocateGuaranteed(byteCount: 4096, .retryForever)) } }
        sleep(milliseconds: 300)
        #expect(!waiter.isFinished)
        #expect(mm.statistics().freeBytes == 256 * pageSize)  // reserves untouched
        mm.freePages(held[0], order: 0)
        watchdog("the retryForever waiter after a free") { waiter.join() }
        #expect(result.withLock { $0 } == UInt(bitPattern: held[0]))
        let stall = try #require(recorder.stalls.first)
        #expect(stall.description.contains("possible memory allocation deadlock"))
        #expect(stall.description.contains("4096 bytes"))
        #expect(stall.site?.file.contains("SlowPathTests") == true)
        #expect(stall.attempts > 1)
        #expect(stall.guarantee == .retryForever)
    }

    @Test("step 10: useReserves succeeds from the .high tier where retryForever keeps waiting")
    func useReserves() throws {
        let mm = try makeExactSystem()
        _ = fillPages(mm, .standard)  // at min
        let hooks = HookCounter(mm)
        watchdog("useReserves on a full arena") {
            let p = mm.allocateGuaranteed(byteCount: 4096, .useReserves)
            mm.deallocate(p)
        }
        #expect(hooks.oomCount == 1)  // complete context: OOM handler first
        #expect(mm.statistics()[counter: "reserve_unlocks"] == 1)
        // In a restricted context it may not OOM, but still gets the reserve.
        watchdog("useReserves in a restricted scope") {
            let q = withAllocationScope(.excluding(.filesystem)) { mm.allocateGuaranteed(byteCount: 4096, .useReserves) }
            mm.deallocate(q)
        }
        #expect(hooks.oomCount == 1)
    }

    @Test("a retryForever scope turns a fallible .standard call into one that waits instead of failing")
    func scopeUpgradesStandard() throws {
        let mm = try makeExactSystem()
        let first = UInt(bitPattern: fillPages(mm, .standard)[0])
        let failuresBefore = mm.statistics()[counter: "fail_standard"]
        let freer = BackgroundThread {
            sleep(milliseconds: 100)
            mm.freePages(UnsafeMutableRawPointer(bitPattern: first)!, order: 0)
        }
        let succeeded = Atomic<Bool>(false)
        watchdog("a .standard call in a retryForever scope") {
            succeeded.store(withAllocationScope(.retryForever) { mm.allocate(byteCount: 4096) } != nil, ordering: .relaxed)
        }
        freer.join()
        let didSucceed = succeeded.load(ordering: .relaxed)
        #expect(didSucceed)
        #expect(mm.statistics()[counter: "fail_standard"] == failuresBefore)
    }

    @Test("failure reports are rate limited and say how many were suppressed")
    func rateLimit() {
        let limiter = ReportRateLimiter(burst: 3, interval: .milliseconds(100))
        let first = (0..<10).map { _ in limiter.admit() }
        #expect(first.compactMap { $0 }.count == 3)
        sleep(milliseconds: 120)
        #expect(limiter.admit() == 7)
        #expect(limiter.admit() == 0)
    }

    @Test("a failure report carries policy, scope, reason and a snapshot")
    func failureReport() throws {
        let mm = try makeExactSystem()
        _ = fillPages(mm, .atomic)
        let recorder = EventRecorder(mm)
        _ = withAllocationScope(.excluding(.filesystem)) { mm.allocate(byteCount: 100, policy: .failFast) }
        let report = try #require(recorder.failures.last)
        #expect(report.request == "100 bytes (kmalloc-128)")
        #expect(report.policy == "blocking|failFast")
        #expect(report.scope == "excluding(filesystem)")
        #expect(report.snapshot.contains("free blocks per order"))
        #expect(withAllocationScope(.quiet) { mm.allocate(byteCount: 100, policy: .failFast) } == nil)
        #expect(recorder.failures.count == 1)
    }
}

/// Runs one closure on a background thread, once.
final class BackgroundWorker: Sendable {
    private let thread = Locked<BackgroundThread?>(nil)
    func run(_ body: @escaping @Sendable () -> Void) { thread.withLock { $0 = BackgroundThread(body) } }
    func join() { thread.withLock { $0 }?.join() }
}

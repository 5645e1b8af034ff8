// SPDX-License-Identifier: Apache-2.0
import Glibc
import Testing
@testable import MM
import MMLab
import Synchronization

/// A system for tests: quiet (no log sink), small by default.
func makeSystem(capacity: Int = 4 << 20, perThreadLists: Bool = true, watermarks: Watermarks? = nil,
                hardening: HardeningAction = .trap, releaseOrder: Int? = 9,
                releaseDelay: Duration = .seconds(1)) throws -> MemorySystem {
    var config = MemoryConfiguration(capacity: capacity)
    config.logsEvents = false
    config.perThreadPageLists = perThreadLists
    config.watermarks = watermarks
    config.hardeningAction = hardening
    config.releaseOrder = releaseOrder
    config.releaseDelay = releaseDelay
    config.backgroundReclaim = false
    return try MemorySystem(config)
}

/// Collects the events of a system.
final class EventRecorder: Sendable {
    private let storage = Locked<[MemoryEvent]>([])

    init(_ mm: MemorySystem) {
        mm.addEventSink { [self] event in storage.withLock { $0.append(event) } }
    }

    var events: [MemoryEvent] { storage.withLock { $0 } }

    var violations: [HardeningViolation] {
        events.compactMap { if case .hardeningViolation(let v) = $0 { return v } else { return nil } }
    }

    var invalidRequests: [InvalidRequest] {
        events.compactMap { if case .invalidRequest(let v) = $0 { return v } else { return nil } }
    }

    var failures: [AllocationFailure] {
        events.compactMap { if case .allocationFailure(let v) = $0 { return v } else { return nil } }
    }
}

/// Runs `body(i)` on `count` new POSIX threads and joins them all, so that
/// thread-exit destructors have run when it returns.
func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box: @unchecked Sendable {  // handed to exactly one thread
        let body: @Sendable (Int) -> Void
        let index: Int
        init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) { self.body = body; self.index = index }
    }
    var threads: [pthread_t] = []
    for i in 0..<count {
        var t = pthread_t()
        let box = Unmanaged.passRetained(Box(body, i)).toOpaque()
        let rc = pthread_create(&t, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body(box.index)
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed")
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

/// Tests use the lab's SplitMix64 so failures reproduce from the seed.
typealias SeededGenerator = MM.SeededGenerator

/// Writes a tag into the first word of every page of a block.
func stamp(_ p: UnsafeMutableRawPointer, order: Int, tag: UInt64) {
    for i in 0..<(1 << order) { (p + i * pageSize).storeBytes(of: tag &+ UInt64(i), as: UInt64.self) }
}

/// Whether every page of the block still holds the tag.
func stampIntact(_ p: UnsafeMutableRawPointer, order: Int, tag: UInt64) -> Bool {
    for i in 0..<(1 << order) where (p + i * pageSize).load(as: UInt64.self) != tag &+ UInt64(i) { return false }
    return true
}

/// Watermarks of 1 MiB / 1.25 MiB / 1.5 MiB: on a 4 MiB arena that is
/// 256 / 320 / 384 pages, convenient numbers for tier tests.
let testWatermarks = Watermarks(min: 1 << 20, low: 1280 << 10, high: 1536 << 10)

extension EventRecorder {
    var stalls: [AllocationStall] {
        events.compactMap { if case .allocationStall(let v) = $0 { return v } else { return nil } }
    }

    var recursions: [ReclaimRecursion] {
        events.compactMap { if case .reclaimRecursion(let v) = $0 { return v } else { return nil } }
    }

    var oomKills: [OOMKill] {
        events.compactMap { if case .oomKill(let v) = $0 { return v } else { return nil } }
    }

    var stuckVictims: [OOMVictimStuck] {
        events.compactMap { if case .oomVictimStuck(let v) = $0 { return v } else { return nil } }
    }

    var conflicts: [ScopeConflict] {
        events.compactMap { if case .scopeConflict(let v) = $0 { return v } else { return nil } }
    }
}

/// A system with exact watermarks (256/320/384 pages of 1024) and no
/// per-thread lists, for slow-path tests; `configure` adjusts the rest.
func makeExactSystem(_ configure: (inout MemoryConfiguration) -> Void = { _ in }) throws -> MemorySystem {
    var config = MemoryConfiguration(capacity: 4 << 20)
    config.logsEvents = false
    config.perThreadPageLists = false
    config.watermarks = testWatermarks
    config.backgroundReclaim = false
    config.stallReportInterval = .milliseconds(50)
    configure(&config)
    return try MemorySystem(config)
}

/// Fills the arena with order-0 pages until `policy` fails; returns them.
func fillPages(_ mm: MemorySystem, _ policy: AllocationPolicy = .nonBlocking) -> [UnsafeMutableRawPointer] {
    var got: [UnsafeMutableRawPointer] = []
    while let p = mm.allocatePages(order: 0, policy: policy) { got.append(p) }
    return got
}

/// Counts the calls of the slow path's reclaim hooks; `progress` is what
/// direct reclaim claims to have freed each time.
final class HookCounter: Sendable {
    let reclaims = Atomic<Int>(0)
    let ooms = Atomic<Int>(0)

    init(_ mm: MemorySystem, progress: Int = 0, oom: @escaping @Sendable () -> OOMOutcome = { .noVictim }) {
        mm.slowPath.hooks.withLock { hooks in
            hooks.directReclaim = { [self] _, _ in reclaims.wrappingAdd(1, ordering: .relaxed); return progress }
            hooks.outOfMemory = { [self] _ in ooms.wrappingAdd(1, ordering: .relaxed); return oom() }
            hooks.victimReleasing = { true }  // a made-up victim: wait for its memory until the reap timeout
        }
    }

    var reclaimCount: Int { reclaims.load(ordering: .relaxed) }
    var oomCount: Int { ooms.load(ordering: .relaxed) }
}

/// Runs `body` on a new thread and returns a handle to join it.
final class BackgroundThread: @unchecked Sendable {  // the pthread_t is only used by join()
    private var thread = pthread_t()
    private let done = Atomic<Bool>(false)

    init(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; let done: BackgroundThread; init(_ b: @escaping @Sendable () -> Void, _ d: BackgroundThread) { body = b; done = d } }
        let box = Unmanaged.passRetained(Box(body, self)).toOpaque()
        pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            box.done.done.store(true, ordering: .releasing)
            return nil
        }, box)
    }

    var isFinished: Bool { done.load(ordering: .acquiring) }

    func join() { pthread_join(thread, nil) }
}

func sleep(milliseconds: Int) {
    usleep(useconds_t(milliseconds * 1000))
}

/// Runs `body` on its own thread and waits at most `seconds` for it. A body
/// that does not finish in time is a test failure with a clear message (the
/// thread is left behind; the process does not hang on it).
@discardableResult
func watchdog(_ what: String, seconds: Double = 20, sourceLocation: SourceLocation = #_sourceLocation,
              _ body: @escaping @Sendable () -> Void) -> Bool {
    let thread = BackgroundThread(body)
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while !thread.isFinished {
        if ContinuousClock.now > deadline {
            Issue.record("watchdog: \(what) did not finish within \(seconds) s (a hang or deadlock)", sourceLocation: sourceLocation)
            return false
        }
        sleep(milliseconds: 2)
    }
    thread.join()
    return true
}

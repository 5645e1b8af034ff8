// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
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

/// A small deterministic generator (SplitMix64) so failures reproduce from the seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

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

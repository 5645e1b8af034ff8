// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization

/// A cache of fixed-size objects backed by a `MemorySystem`, with a shrinker
/// that evicts the oldest. Thread-safe; records every call it gets.
final class TestCache: Shrinker, @unchecked Sendable {  // all mutable state is behind `objects`
    let name: String
    let domain: ReclaimDomain?
    let seeks: Int
    let objectSize: Int
    private let mm: MemorySystem
    private let objects = Locked<[UInt]>([])
    let scans = Atomic<Int>(0)
    /// Scans asked for by a request whose context excludes this cache's domain (must stay 0).
    let scansFromExcludingContext = Atomic<Int>(0)
    let counts = Atomic<Int>(0)
    /// Called inside each scan before evicting (e.g. to take a lock); return false to answer `.stop`.
    let beforeScan: @Sendable () -> Bool
    let group: MemoryGroup?

    init(_ mm: MemorySystem, name: String = "test-cache", domain: ReclaimDomain? = nil, seeks: Int = 2,
         objectSize: Int = 4096, group: MemoryGroup? = nil, beforeScan: @escaping @Sendable () -> Bool = { true }) {
        self.mm = mm
        self.name = name
        self.domain = domain
        self.seeks = seeks
        self.objectSize = objectSize
        self.group = group
        self.beforeScan = beforeScan
    }

    /// Adds objects until `count` are held or memory runs out (non-blocking).
    @discardableResult
    func fill(_ count: Int, policy: AllocationPolicy = .nonBlocking) -> Int {
        var added = 0
        var p = policy
        p.group = group
        for _ in 0..<count {
            guard let o = mm.allocate(byteCount: objectSize, policy: p) else { break }
            o.storeBytes(of: 0xCAC4E, as: UInt64.self)
            objects.withLock { $0.append(UInt(bitPattern: o)) }
            added += 1
        }
        return added
    }

    var count: Int { objects.withLock { $0.count } }

    /// Takes an object allocated elsewhere (its first word must hold the cache's tag).
    func adoptRaw(_ address: UInt) { objects.withLock { $0.append(address) } }

    func evict(_ n: Int) -> Int {
        let victims = objects.withLock { list -> [UInt] in
            let k = min(n, list.count)
            defer { list.removeFirst(k) }
            return Array(list.prefix(k))
        }
        for a in victims {
            let p = UnsafeMutableRawPointer(bitPattern: a)!
            precondition(p.load(as: UInt64.self) == 0xCAC4E, "cache object corrupted")
            mm.deallocate(p)
        }
        return victims.count
    }

    func clear() { _ = evict(Int.max) }

    func countObjects(_ control: ShrinkControl) -> Int {
        counts.wrappingAdd(1, ordering: .relaxed)
        return count
    }

    func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        scans.wrappingAdd(1, ordering: .relaxed)
        if let context = control.context, !context.mayReclaim(in: domain) {
            scansFromExcludingContext.wrappingAdd(1, ordering: .relaxed)
        }
        guard beforeScan() else { return .stop }
        return .freed(evict(control.objectsToScan))
    }

    var scanCount: Int { scans.load(ordering: .relaxed) }
}

/// A shrinker with a fixed freeable count that records what it was asked.
final class RecordingShrinker: Shrinker, @unchecked Sendable {  // `asked` behind a lock
    let name = "recording"
    let domain: ReclaimDomain? = nil
    let seeks: Int
    let freeable: Int
    let stopAfter: Int?
    let asked = Locked<[Int]>([])

    init(freeable: Int, seeks: Int = 2, stopAfter: Int? = nil) {
        self.freeable = freeable
        self.seeks = seeks
        self.stopAfter = stopAfter
    }

    func countObjects(_ control: ShrinkControl) -> Int { freeable }

    func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        let n = asked.withLock { $0.append(control.objectsToScan); return $0.count }
        if let stopAfter, n > stopAfter { return .stop }
        return .freed(0)
    }
}

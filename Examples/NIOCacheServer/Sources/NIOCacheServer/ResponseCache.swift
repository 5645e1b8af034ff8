// SPDX-License-Identifier: Apache-2.0
import DequeModule
import MM
import NIOConcurrencyHelpers
import Synchronization

/// A response cache whose entries live in swift-mm memory and which gives
/// them back under pressure: a `Shrinker` that evicts least recently
/// inserted entries first.
public final class ResponseCache: Shrinker, Sendable {
    public let name = "http-response-cache"
    public let domain: ReclaimDomain? = nil
    private let system: MemorySystem
    private struct State: Sendable {
        var entries: [Int: (address: UInt, count: Int)] = [:]  // addresses: Sendable across the lock
        var order = Deque<Int>()
        var bytes = 0
    }
    // A pthread mutex (NIOLockedValueBox), which ThreadSanitizer understands.
    private let state = NIOLockedValueBox(State())
    /// Entries evicted by reclaim, and inserts skipped because memory was short.
    public let evictions = Atomic<Int>(0), skippedInserts = Atomic<Int>(0)

    public init(system: MemorySystem) {
        self.system = system
    }

    /// Bytes cached now.
    public var bytes: Int { state.withLockedValue { $0.bytes } }
    /// Entries cached now.
    public var count: Int { state.withLockedValue { $0.entries.count } }

    /// Calls `body` with the cached bytes of `key` (under the cache's lock, so
    /// that reclaim cannot free them meanwhile); nil when not cached.
    public func withEntry<R>(_ key: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        state.withLockedValue { s in
            guard let e = s.entries[key] else { return nil }
            return body(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: e.address), count: e.count))
        }
    }

    /// Caches a copy of `bytes` under `key` if memory allows it without
    /// waiting (`.nonBlocking`: a cache is the first thing to go without).
    public func insert(_ key: Int, _ bytes: UnsafeRawBufferPointer) {
        var policy = AllocationPolicy.nonBlocking
        policy.reportsFailure = false
        guard let p = system.allocate(byteCount: bytes.count, policy: policy) else {
            skippedInserts.wrappingAdd(1, ordering: .relaxed)
            return
        }
        p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        let address = UInt(bitPattern: p), count = bytes.count
        let replaced = state.withLockedValue { s -> UInt? in
            let old = s.entries.updateValue((address, count), forKey: key)
            if let old { s.bytes -= old.count } else { s.order.append(key) }
            s.bytes += count
            return old?.address
        }
        if let replaced { system.deallocate(UnsafeMutableRawPointer(bitPattern: replaced)!) }
    }

    /// Frees every entry.
    public func removeAll() {
        let all = state.withLockedValue { s -> [UInt] in
            defer { s.entries = [:]; s.order = []; s.bytes = 0 }
            return s.entries.values.map(\.address)
        }
        for a in all { system.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
    }

    public func countObjects(_ control: ShrinkControl) -> Int { state.withLockedValue { $0.entries.count } }

    public func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        let victims = state.withLockedValue { s -> [UInt] in
            var out: [UInt] = []
            while out.count < control.objectsToScan, let key = s.order.popFirst() {
                guard let e = s.entries.removeValue(forKey: key) else { continue }
                s.bytes -= e.count
                out.append(e.address)
            }
            return out
        }
        for a in victims { system.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
        evictions.wrappingAdd(victims.count, ordering: .relaxed)
        return .freed(victims.count)
    }
}

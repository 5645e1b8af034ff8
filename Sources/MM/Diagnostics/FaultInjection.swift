// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Deliberate allocation failures for testing error paths.
/// Kernel analogue: `failslab` / `fail_page_alloc` and `/proc/<pid>/fail-nth`.
///
/// A call is *eligible* when it is fallible (guaranteed requests — by call
/// or by scope — are never failed) and matches `callSites`. Among eligible
/// calls, once `space` bytes have been allocated, every `interval`-th call
/// fails with `probability`, at most `times` times.
public struct FaultInjection: Sendable, Hashable {
    /// Chance that a candidate call fails, 0...1.
    public var probability: Double = 1
    /// Only every `interval`-th eligible call is a candidate (≥ 1).
    public var interval: Int = 1
    /// At most this many failures; `nil` for no limit.
    public var times: Int?
    /// Bytes that eligible calls may allocate before any of them fails.
    public var space: Int = 0
    /// Only calls whose `file:line` contains one of these strings (empty: every call).
    public var callSites: [String] = []
    /// Only object allocations from caches with one of these names, e.g.
    /// `kmalloc-64` (empty: every call, page and object alike).
    /// Kernel analogue: `failslab`'s `cache-filter`.
    public var caches: [String] = []
    /// Seed of the generator behind `probability`, so runs repeat.
    public var seed: UInt64 = 0x5EED

    /// Every eligible call fails, from the first one.
    public init() {}
}

/// The state behind a system's fault injection: its `FaultInjection`
/// configuration, if any, and `failNthAllocation` armed on threads. While
/// either may fail a request it keeps the system's fast paths closed, so
/// that it sees every call. The slow path asks it once per request, at entry.
final class FaultInjector: Sendable {
    let configuration: FaultInjection?
    private let systemID: UInt64
    private let gate: FastPathGate
    /// Reasons the gate stays closed besides fault injection (profiling).
    private let otherHolds: Int

    private struct State: Sendable {
        var eligible = 0
        var failures = 0
        var spaceLeft: Int
        var rng: SeededGenerator
    }
    private let state: Locked<State>
    /// Threads armed with `failNthAllocation` for this system.
    private let armedThreads = Atomic<Int>(0)

    init(_ configuration: FaultInjection?, systemID: UInt64, gate: FastPathGate, otherHolds: Int) {
        self.configuration = configuration
        self.systemID = systemID
        self.gate = gate
        self.otherHolds = otherHolds
        state = Locked(State(spaceLeft: configuration?.space ?? 0, rng: SeededGenerator(seed: configuration?.seed ?? 0)))
        updateGate()
    }

    private func updateGate() {
        gate.setHolds((configuration != nil ? 1 : 0) + otherHolds + armedThreads.load(ordering: .relaxed))
    }

    /// Whether this fallible request (guaranteed ones are never asked) fails.
    func shouldFail(byteCount: Int, site: CallSite?, cache: String?) -> Bool {
        if armedThreads.load(ordering: .relaxed) > 0, let state = ThreadScopeState.current,
           state.pointee.failNthSystem == systemID, state.pointee.failNth > 0 {
            state.pointee.failNth -= 1
            if state.pointee.failNth == 0 {
                state.pointee.failNthSystem = 0
                armedThreads.wrappingSubtract(1, ordering: .relaxed)
                updateGate()
                return true
            }
        }
        guard let c = configuration else { return false }
        if !c.caches.isEmpty {
            guard let cache, c.caches.contains(cache) else { return false }
        }
        if !c.callSites.isEmpty {
            guard let site else { return false }
            let text = site.description
            guard c.callSites.contains(where: { text.contains($0) }) else { return false }
        }
        return state.withLock { s in
            if s.spaceLeft > 0 {
                s.spaceLeft -= byteCount
                return false
            }
            s.eligible += 1
            guard s.eligible % c.interval == 0 else { return false }
            if let times = c.times, s.failures >= times { return false }
            if c.probability < 1 {
                guard Double(s.rng.next() >> 11) / Double(1 << 53) < c.probability else { return false }
            }
            s.failures += 1
            return true
        }
    }

    /// Arms (n ≥ 1) or disarms (n = 0) fail-the-Nth on the calling thread.
    /// Kernel analogue: writing `/proc/<pid>/fail-nth`.
    func failNth(_ n: Int) {
        let state = ThreadScopeState.currentOrCreate()
        let wasArmed = state.pointee.failNthSystem == systemID && state.pointee.failNth > 0
        if wasArmed { armedThreads.wrappingSubtract(1, ordering: .relaxed) }
        if n > 0 {
            state.pointee.failNth = n
            state.pointee.failNthSystem = systemID
            armedThreads.wrappingAdd(1, ordering: .relaxed)
        } else {
            state.pointee.failNth = 0
            state.pointee.failNthSystem = 0
        }
        updateGate()
    }
}

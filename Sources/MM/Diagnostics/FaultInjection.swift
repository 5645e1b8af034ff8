// SPDX-License-Identifier: Apache-2.0

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

    func validated() throws(ConfigurationError) -> FaultInjection {
        guard (0...1).contains(probability) else {
            throw ConfigurationError(field: "faultInjection.probability", message: "\(probability) is outside 0...1")
        }
        guard interval >= 1 else {
            throw ConfigurationError(field: "faultInjection.interval", message: "\(interval) must be at least 1")
        }
        if let times, times < 0 {
            throw ConfigurationError(field: "faultInjection.times", message: "\(times) is negative")
        }
        guard space >= 0 else {
            throw ConfigurationError(field: "faultInjection.space", message: "\(space) is negative")
        }
        return self
    }
}

/// The state behind a system's `FaultInjection`.
final class FaultInjector: Sendable {
    let configuration: FaultInjection

    private struct State: Sendable {
        var eligible = 0
        var failures = 0
        var spaceLeft: Int
        var rng: UInt64
    }
    private let state: Locked<State>

    init(_ configuration: FaultInjection) {
        self.configuration = configuration
        state = Locked(State(spaceLeft: configuration.space, rng: configuration.seed))
    }

    /// Whether this eligible call should fail.
    func shouldFail(byteCount: Int, site: CallSite?, cache: String?) -> Bool {
        let c = configuration
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
                s.rng = s.rng &* 6364136223846793005 &+ 1442695040888963407
                guard Double(s.rng >> 11) / Double(1 << 53) < c.probability else { return false }
            }
            s.failures += 1
            return true
        }
    }
}

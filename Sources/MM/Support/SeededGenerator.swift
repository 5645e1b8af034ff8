// SPDX-License-Identifier: Apache-2.0
import Glibc

/// SplitMix64: a small deterministic generator, so that choices repeat from
/// a seed (fault injection's `probability`, scenarios, tests, benchmarks).
/// The one generator of swift-mm.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 64 bits from the kernel's random pool (`getrandom` behind the
    /// standard library's system generator), for secrets such as the slab
    /// canaries: never from a seed.
    static func systemSeed() -> UInt64 {
        var system = SystemRandomNumberGenerator()
        return system.next()
    }
}

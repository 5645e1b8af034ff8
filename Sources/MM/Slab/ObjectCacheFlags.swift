// SPDX-License-Identifier: Apache-2.0

/// Options of an object cache (`ObjectCache.Flags`). Kernel analogue: `SLAB_*` flags.
public struct ObjectCacheFlags: OptionSet, Sendable, Hashable {
    /// The flags as bits.
    public let rawValue: UInt32
    /// Flags from their bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The objects are a cache that a shrinker frees under pressure: the
    /// slabs count as `SReclaimable` in meminfo. Kernel analogue: `SLAB_RECLAIM_ACCOUNT`.
    public static let reclaimable = ObjectCacheFlags(rawValue: 1 << 0)
    /// A 16-byte red zone after each object, checked at every free: a
    /// write past the end is a `hardeningViolation` (`.redZoneOverwritten`).
    /// Kernel analogue: `SLAB_RED_ZONE`.
    public static let redZone = ObjectCacheFlags(rawValue: 1 << 1)
    /// Free objects are filled with 0x6b and checked at the next
    /// allocation: a write after free is a `hardeningViolation`
    /// (`.writeAfterFree`). Kernel analogue: `SLAB_POISON`.
    public static let poison = ObjectCacheFlags(rawValue: 1 << 2)
    /// Objects are zeroed when freed, so no data outlives its owner.
    /// Kernel analogue: `init_on_free` for one cache.
    public static let zeroOnFree = ObjectCacheFlags(rawValue: 1 << 3)
}

// SPDX-License-Identifier: Apache-2.0

/// How hard an allocation tries before it gives up.
/// Kernel analogue: the retry modifiers of the GFP mask.
public enum Persistence: Sendable, Hashable, CaseIterable {
    /// One round of reclaim, then fail. Kernel: `__GFP_NORETRY`.
    case failFast
    /// Retry while reclaim makes progress, at most `maxReclaimRetries` times,
    /// then fail; never invokes the OOM handler. Kernel: `__GFP_RETRY_MAYFAIL`.
    case retryWhileProgress
    /// As `.retryWhileProgress`, then the OOM handler when the request could
    /// reclaim completely (rule R6). Kernel: the default for `GFP_KERNEL`.
    case standard
}

/// Whether a request may dip into the reserves below the `min` watermark.
/// Kernel analogue: `__GFP_HIGH`.
public enum ReserveRequest: Sendable, Hashable, CaseIterable {
    /// Ordinary request: may allocate down to `min`.
    case none
    /// Forward progress depends on it: may allocate down to `min/2`, or
    /// `min/4` when it also cannot block (the kernel's `GFP_ATOMIC`).
    case high
}

/// Where a byte allocation's memory comes from.
///
/// The default of every preset is `.automatic`, so that any size from one
/// byte to the capacity works with the defaults; `.contiguous` is for
/// callers that need physically contiguous memory (at most 4 MiB).
public enum Placement: Sendable, Hashable, CaseIterable {
    /// Physically contiguous: slab object or buddy pages, at most
    /// `MemorySystem.maxContiguousBytes`. Kernel: `kmalloc`.
    case contiguous
    /// Virtually contiguous pages mapped into the vmalloc area. Kernel: `vmalloc`.
    case virtual
    /// Contiguous if it is cheap, otherwise virtual: the default. Kernel: `kvmalloc`.
    case automatic
}

/// What an allocation may do to get memory. A value type with one meaning
/// per field; the presets cover the kernel's common masks.
///
/// | field | kernel analogue |
/// |---|---|
/// | `blocking` | `__GFP_DIRECT_RECLAIM` present / absent |
/// | `persistence` | `__GFP_NORETRY`, `__GFP_RETRY_MAYFAIL`, default |
/// | `reserve` | `__GFP_HIGH` |
/// | `zeroed` | `__GFP_ZERO` |
/// | `reportsFailure` | inverse of `__GFP_NOWARN` |
/// | `placement` | kmalloc/pages, vmalloc, kvmalloc |
/// | `group` | `__GFP_ACCOUNT` / memcg |
public struct AllocationPolicy: Sendable, Hashable {
    /// May sleep and run direct reclaim. Kernel: `__GFP_DIRECT_RECLAIM`.
    public var blocking: Bool
    /// How hard to retry. Only meaningful for blocking requests.
    public var persistence: Persistence
    /// Access to reserves below `min`. Kernel: `__GFP_HIGH`.
    public var reserve: ReserveRequest
    /// Return zero-filled memory. Kernel: `__GFP_ZERO`.
    public var zeroed: Bool
    /// Report a failure as an `allocationFailure` event. Kernel: `!__GFP_NOWARN`.
    public var reportsFailure: Bool
    /// Where the memory of a byte allocation comes from.
    public var placement: Placement
    /// The group charged for the memory. Kernel: `__GFP_ACCOUNT` with the memcg.
    public var group: MemoryGroup?

    /// Creates a policy. Every field has one meaning; see the type's table.
    @inlinable
    public init(blocking: Bool = true, persistence: Persistence = .standard, reserve: ReserveRequest = .none,
                zeroed: Bool = false, reportsFailure: Bool = true, placement: Placement = .automatic,
                group: MemoryGroup? = nil) {
        self.blocking = blocking
        self.persistence = persistence
        self.reserve = reserve
        self.zeroed = zeroed
        self.reportsFailure = reportsFailure
        self.placement = placement
        self.group = group
    }

    /// May block, reclaim and retry; may invoke the OOM handler; any size
    /// (kvmalloc placement). Kernel: `GFP_KERNEL` with `kvmalloc`.
    @inlinable public static var standard: AllocationPolicy { AllocationPolicy() }
    /// One round of reclaim, then fail. Kernel: `GFP_KERNEL | __GFP_NORETRY`.
    @inlinable public static var failFast: AllocationPolicy { AllocationPolicy(persistence: .failFast) }
    /// Retry while reclaim makes progress, then fail; no OOM. Kernel: `GFP_KERNEL | __GFP_RETRY_MAYFAIL`.
    @inlinable public static var retryWhileProgress: AllocationPolicy { AllocationPolicy(persistence: .retryWhileProgress) }
    /// Never sleeps, never reclaims, no reserves, no failure report. Kernel: `GFP_NOWAIT`.
    @inlinable public static var nonBlocking: AllocationPolicy { AllocationPolicy(blocking: false, reportsFailure: false) }
    /// Never sleeps; may use the atomic reserve (down to `min/4`). Kernel: `GFP_ATOMIC`.
    @inlinable public static var atomic: AllocationPolicy { AllocationPolicy(blocking: false, reserve: .high) }

    /// The reserve tier this policy alone entitles a request to; contexts
    /// (OOM victims, reclaim) may raise it.
    @inlinable
    var baseTier: ReserveTier {
        switch reserve {
        case .none: return .none
        case .high: return blocking ? .high : .atomic
        }
    }
}

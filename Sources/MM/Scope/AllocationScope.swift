// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// What a guaranteed allocation does when memory is short.
public enum Guarantee: Sendable, Hashable, CustomStringConvertible {
    /// Reclaim and wait as long as it takes; never invoke the OOM handler on
    /// its own behalf, never touch reserves, report stalls. The semantics
    /// filesystems asked for (Dave Chinner, 2021).
    case retryForever
    /// As `.retryForever`, but after reclaim fails it may invoke the OOM
    /// handler and then allocate down to the `.high` tier. Kernel: `__GFP_NOFAIL`.
    case useReserves

    /// A one-line description, as events and reports print it.
    public var description: String { self == .retryForever ? "retryForever" : "useReserves" }
}

/// A constraint or guarantee that applies to every allocation made inside
/// it, on the current task or thread. Scopes combine (`union`): restrictions
/// accumulate and are never lifted by an inner scope (rule R1); between
/// guarantees and between charged groups the innermost wins (R4).
///
/// | scope | kernel analogue |
/// |---|---|
/// | `.excluding(.filesystem)` | `memalloc_nofs_save` |
/// | `.excluding(.io)` | `memalloc_noio_save` |
/// | `.noDirectReclaim` | `PF_MEMALLOC_NORECLAIM` (reverted in 6.12; defined here) |
/// | `.nonBlocking` | none: every allocation becomes `GFP_NOWAIT`-like |
/// | `.retryForever`, `.useReserves` | none: the NOFAIL scope nobody had |
/// | `.reclaiming` | `memalloc_noreclaim_save` (`PF_MEMALLOC`) |
/// | `.charging(group)` | `set_active_memcg` |
/// | `.quiet` | `PF_MEMALLOC_NOWARN` (reverted in 6.12; defined here) |
public struct AllocationScope: Sendable, Equatable, CustomStringConvertible {
    /// Bits of excluded reclaim domains.
    @usableFromInline var excluded: UInt64 = 0
    @usableFromInline var flags: UInt8 = 0
    /// The guarantee given to blocking `.standard` calls (rule R3).
    @usableFromInline var guarantee: Guarantee?
    /// Entry order of the guarantee, for "innermost wins" (0: never entered).
    @usableFromInline var guaranteeOrder: UInt64 = 0
    /// The group charged for allocations without `policy.group`, unretained:
    /// groups live as long as the system that made them, and an unretained
    /// reference keeps the scope free of reference counting.
    @usableFromInline var chargingGroup: UInt = 0
    @usableFromInline var chargingOrder: UInt64 = 0

    /// The group charged for allocations without `policy.group`.
    var charging: MemoryGroup? {
        get {
            guard let raw = UnsafeRawPointer(bitPattern: chargingGroup) else { return nil }
            return Unmanaged<MemoryGroup>.fromOpaque(raw).takeUnretainedValue()
        }
        set { chargingGroup = newValue.map { UInt(bitPattern: Unmanaged.passUnretained($0).toOpaque()) } ?? 0 }
    }

    static let flagNoDirectReclaim: UInt8 = 1
    static let flagNonBlocking: UInt8 = 2
    static let flagQuiet: UInt8 = 4
    static let flagReclaiming: UInt8 = 8

    @usableFromInline init() {}

    /// No constraint.
    public static let none = AllocationScope()

    /// Reclaim may not enter these domains (nor domains within them).
    /// Kernel: `memalloc_nofs_save` / `memalloc_noio_save`.
    /// - Parameter domains: the reclaim domains to exclude (each with its subdomains).
    /// - Returns: the scope.
    public static func excluding(_ domains: ReclaimDomain...) -> AllocationScope {
        var s = AllocationScope()
        for d in domains { s.excluded |= 1 << UInt64(d.index) }
        return s
    }

    /// Reclaim may not enter `domain` (nor domains within it); the common
    /// one-domain form, without the variadic array.
    /// - Parameter domain: the reclaim domain to exclude (with its subdomains).
    /// - Returns: the scope.
    @inlinable
    public static func excluding(_ domain: ReclaimDomain) -> AllocationScope {
        AllocationScope(excludedMask: 1 << UInt64(domain.index))
    }

    @usableFromInline
    init(excludedMask: UInt64) { excluded = excludedMask }

    /// Allocations may not run reclaim themselves; blocking ones wait for
    /// the background reclaimer instead.
    public static let noDirectReclaim = AllocationScope(flags: flagNoDirectReclaim)
    /// Allocations never sleep and never reclaim (R7); guaranteed calls still
    /// block and report a `scopeConflict` (R2).
    public static let nonBlocking = AllocationScope(flags: flagNonBlocking)
    /// Blocking `.standard` calls inside retry for ever (R3).
    public static let retryForever = AllocationScope(guarantee: .retryForever)
    /// Blocking `.standard` calls inside get `Guarantee.useReserves` (R3).
    public static let useReserves = AllocationScope(guarantee: .useReserves)
    /// Failures inside are not reported.
    public static let quiet = AllocationScope(flags: flagQuiet)
    /// The context of code that frees memory (shrinkers, the background
    /// reclaimer; the system sets it around them): no direct reclaim ever
    /// (R5), and allocations may use the `.emergency` tier.
    public static let reclaiming = AllocationScope(flags: flagReclaiming)

    /// Allocations inside are charged to `group` unless their policy names one.
    /// They take the slow path, which reads scopes. Entered as a closure scope
    /// (`withAllocationScope`), whose tasks may run on any thread, it makes
    /// every thread's fast paths step aside while it is active; entered as a
    /// token or with `withThreadAllocationScope`, only its own thread's.
    /// Kernel: `set_active_memcg`.
    /// - Parameter group: the group charged.
    /// - Returns: the scope.
    public static func charging(_ group: MemoryGroup) -> AllocationScope {
        var s = AllocationScope()
        s.charging = group
        return s
    }

    private init(flags: UInt8) { self.flags = flags }
    private init(guarantee: Guarantee) { self.guarantee = guarantee }

    /// Both scopes at once: excluded domains and the sticky restrictions
    /// (`noDirectReclaim`, `nonBlocking`, `quiet`, `reclaiming`) accumulate;
    /// of two guarantees (or charged groups) the one entered later wins, and
    /// for values never entered, `other`'s (it is treated as the inner one).
    /// - Parameter other: the scope to combine with (R1, R4).
    /// - Returns: both in force.
    @inlinable
    public func union(_ other: AllocationScope) -> AllocationScope {
        var s = self
        s.excluded |= other.excluded
        s.flags |= other.flags
        if other.guarantee != nil && (s.guarantee == nil || other.guaranteeOrder >= s.guaranteeOrder) {
            s.guarantee = other.guarantee
            s.guaranteeOrder = other.guaranteeOrder
        }
        if other.chargingGroup != 0 && (s.chargingGroup == 0 || other.chargingOrder >= s.chargingOrder) {
            s.chargingGroup = other.chargingGroup
            s.chargingOrder = other.chargingOrder
        }
        return s
    }

    /// The effective scope of the current task and thread, now: the closure
    /// scopes of the task (or thread) combined with this thread's tokens.
    public static var current: AllocationScope {
        ScopeStorage.current()
    }

    // MARK: Queries

    /// Whether reclaim in `domain` is excluded here.
    /// - Parameter domain: a reclaim domain.
    /// - Returns: whether this scope excludes it (or an ancestor of it).
    public func excludes(_ domain: ReclaimDomain) -> Bool { domain.ancestry & excluded != 0 }
    /// Whether any domain is excluded.
    public var excludesAnyDomain: Bool { excluded != 0 }
    /// Whether the scope forbids direct reclaim (`.noDirectReclaim`, or inside `.reclaiming`).
    public var forbidsDirectReclaim: Bool { flags & AllocationScope.flagNoDirectReclaim != 0 }
    /// Whether requests in the scope may not sleep (`.nonBlocking`). Kernel: a NOWAIT scope.
    public var isNonBlocking: Bool { flags & AllocationScope.flagNonBlocking != 0 }
    /// Whether failures in the scope go unreported (`.quiet`). Kernel: `PF_MEMALLOC_NOWARN`.
    public var isQuiet: Bool { flags & AllocationScope.flagQuiet != 0 }
    /// Whether the scope is reclaim itself (`.reclaiming`, set around shrinkers and background reclaim). Kernel: `PF_MEMALLOC`.
    public var isReclaiming: Bool { flags & AllocationScope.flagReclaiming != 0 }
    /// The guarantee blocking `.standard` calls get here, if any.
    public var upgradeGuarantee: Guarantee? { guarantee }
    /// The group charged here, if any.
    public var chargedGroup: MemoryGroup? { charging }

    /// Stamps guarantees and charging with their entry order (only scopes
    /// that carry one pay for the global counter).
    @inlinable
    func entered() -> AllocationScope {
        guard guarantee != nil || chargingGroup != 0 else { return self }
        return stamped()
    }

    @usableFromInline
    func stamped() -> AllocationScope {
        var s = self
        let order = ScopeStorage.entryCounter.wrappingAdd(1, ordering: .relaxed).newValue
        if s.guarantee != nil { s.guaranteeOrder = order }
        if s.chargingGroup != 0 { s.chargingOrder = order }
        return s
    }

    /// Whether the two are the same (see the type's notion of identity).
    public static func == (a: AllocationScope, b: AllocationScope) -> Bool {
        a.excluded == b.excluded && a.flags == b.flags && a.guarantee == b.guarantee && a.chargingGroup == b.chargingGroup
    }

    /// The scope in words, e.g. `excluding(filesystem)|noDirectReclaim|retryForever`.
    public var description: String {
        var parts: [String] = []
        if excluded != 0 { parts.append("excluding(\(DomainRegistry.shared.names(in: excluded).joined(separator: ",")))") }
        if forbidsDirectReclaim { parts.append("noDirectReclaim") }
        if isNonBlocking { parts.append("nonBlocking") }
        if let guarantee { parts.append(guarantee.description) }
        if isReclaiming { parts.append("reclaiming") }
        if let charging { parts.append("charging(\(charging.name))") }
        if isQuiet { parts.append("quiet") }
        return parts.isEmpty ? "none" : parts.joined(separator: "|")
    }
}

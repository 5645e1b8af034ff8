// SPDX-License-Identifier: Apache-2.0

/// One request after its policy, the call's guarantee, the current scopes
/// and the thread's state have been resolved: what it may do, computed once
/// per slow-path entry by `resolve`, the single implementation of rules R1–R7.
/// Kernel analogue: `current_gfp_context()` + `gfp_to_alloc_flags()`, with
/// the precedence questions the kernel leaves open answered.
public struct AllocationContext: Sendable, CustomStringConvertible {
    /// The request in words, e.g. `"4096 bytes (order 0)"` or `"100 bytes (kmalloc-128)"`.
    public var request: String { requestDescription.description }
    /// The request's parts; put into words only when a report needs them.
    var requestDescription: RequestDescription
    /// The policy as given by the call (`.standard` for guaranteed calls).
    public var policy: AllocationPolicy
    /// The scope in force when the request was made.
    public var scope: AllocationScope
    /// Where the request was made, when known.
    public var site: CallSite?

    /// The guarantee in force: the call's own, or one a scope gave (R3).
    public var guarantee: Guarantee?
    /// May sleep (R1: a `.nonBlocking` scope forbids it, R2: a call's guarantee allows it again).
    public var blocking: Bool
    /// May run reclaim itself (never inside `.reclaiming`, `.noDirectReclaim` or `.nonBlocking`).
    public var directReclaim: Bool
    /// Retry behaviour for requests without a guarantee.
    public var persistence: Persistence
    /// How far below `min` it may take pages before any OOM step.
    public var tier: ReserveTier
    /// Whether a failure is reported.
    public var reportsFailure: Bool
    /// The group charged.
    public var group: MemoryGroup?
    /// Runs inside reclaim (R5).
    public var reclaiming: Bool
    /// May invoke the OOM handler itself (R6).
    public var mayInvokeOOM: Bool
    /// A scope restriction the call's guarantee overrode (R2, R5), reported
    /// once per call site.
    public var conflict: String?
    /// Bytes charged to `group` before the first attempt (R8); the slow path
    /// corrects it to what the serving step handed out.
    var chargedBytes = 0

    /// Whether reclaim in `domain` is allowed for this request (nil: safe anywhere).
    /// - Parameter domain: a shrinker's domain (nil: safe anywhere).
    /// - Returns: whether this request may run it.
    public func mayReclaim(in domain: ReclaimDomain?) -> Bool {
        guard let domain else { return true }
        return !scope.excludes(domain)
    }

    /// Whether reclaim on this request's behalf could reach every shrinker.
    public var reclaimIsComplete: Bool { directReclaim && !scope.excludesAnyDomain }

    /// Resolves a request. The rules, in order:
    /// - R1: restrictions accumulate — a `.nonBlocking` scope makes the call
    ///   non-blocking, excluded domains and `.noDirectReclaim` stay in force.
    /// - R2, R4: a call's explicit guarantee beats the scope: the call blocks
    ///   even in a `.nonBlocking` scope (reported as a conflict) and keeps its
    ///   own guarantee whatever guarantee scope surrounds it.
    /// - R3: a scope's guarantee upgrades only blocking `.standard` calls.
    /// - R5: inside `.reclaiming` there is no direct reclaim and the tier is
    ///   `.emergency`; a guaranteed call there is a reported conflict.
    /// - R6: the OOM handler only after complete reclaim, for `.standard`
    ///   persistence or the `.useReserves` guarantee.
    /// - R7: non-blocking requests never sleep or run shrinkers.
    static func resolve(request: String, policy: AllocationPolicy, guarantee callGuarantee: Guarantee?,
                               scope: AllocationScope, site: CallSite?, isOOMVictim: Bool = false) -> AllocationContext {
        resolve(.text(request), policy: policy, guarantee: callGuarantee, scope: scope, site: site, isOOMVictim: isOOMVictim)
    }

    /// `resolve` with the request in parts (no string is built on the slow path).
    static func resolve(_ request: RequestDescription, policy: AllocationPolicy, guarantee callGuarantee: Guarantee?,
                        scope: AllocationScope, site: CallSite?, isOOMVictim: Bool = false) -> AllocationContext {
        let reclaiming = scope.isReclaiming
        var blocking = policy.blocking && !scope.isNonBlocking             // R1
        var guarantee: Guarantee?
        var conflict: String?
        if let callGuarantee {                                               // R2, R4
            guarantee = callGuarantee
            if !blocking {
                conflict = "a guaranteed call inside a nonBlocking scope blocks: the call's guarantee beats the scope's restriction (R2)"
            }
            blocking = true
        } else if let scoped = scope.guarantee, blocking, policy.persistence == .standard {
            guarantee = scoped                                               // R3
        }
        let directReclaim = blocking && !scope.forbidsDirectReclaim && !scope.isNonBlocking && !reclaiming
        var tier: ReserveTier = policy.reserve == .high ? (blocking ? .high : .atomic) : .none
        if isOOMVictim { tier = Swift.max(tier, .oomVictim) }
        if reclaiming {                                                      // R5
            tier = .emergency
            if callGuarantee != nil {
                conflict = "a guaranteed call inside reclaim never recurses into reclaim; it is served from the emergency reserves (R5)"
            }
        }
        let complete = directReclaim && !scope.excludesAnyDomain
        let mayInvokeOOM = complete && ((guarantee == nil && policy.persistence == .standard) || guarantee == .useReserves)  // R6
        return AllocationContext(
            requestDescription: request, policy: policy, scope: scope, site: site, guarantee: guarantee, blocking: blocking,
            directReclaim: directReclaim, persistence: policy.persistence, tier: tier,
            reportsFailure: policy.reportsFailure && !scope.isQuiet, group: policy.group ?? scope.charging,
            reclaiming: reclaiming, mayInvokeOOM: mayInvokeOOM, conflict: conflict)
    }

    /// A one-line description, as events and reports print it.
    public var description: String {
        var s = "\(request), policy \(policy), scope \(scope)"
        if let guarantee { s += ", guarantee \(guarantee)" }
        s += ", tier \(tier)"
        if let site { s += ", at \(site)" }
        return s
    }
}

/// A request's size and where it is served from, put into words lazily.
enum RequestDescription: Sendable, CustomStringConvertible {
    case text(String)
    /// `bytes` from the buddy block of `order` (bytes 0: a page request).
    case pages(bytes: Int, order: Int)
    /// `bytes` from an object cache.
    case object(bytes: Int, cache: String)

    var description: String {
        switch self {
        case .text(let s): return s
        case .pages(let bytes, let order): return bytes > 0 ? "\(bytes) bytes (order \(order))" : "order \(order)"
        case .object(let bytes, let cache): return "\(bytes) bytes (\(cache))"
        }
    }
}

extension AllocationContext {
    /// What every slow-path request does before its first attempt: read the
    /// current scope and resolve the policy against it (rules R1–R7). For
    /// `mmctl bench kvmalloc`, which measures what this "flag check" costs
    /// against a whole kvmalloc call (Michal Hocko's question in the 2021 thread).
    /// - Parameter policy: the request's policy.
    /// - Returns: the resolved context.
    @_spi(Benchmarks)
    public static func _resolveForBenchmark(policy: AllocationPolicy) -> AllocationContext {
        resolve(.pages(bytes: 65536, order: 4), policy: policy, guarantee: nil, scope: AllocationScope.current, site: nil)
    }
}

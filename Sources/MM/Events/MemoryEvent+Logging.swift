// SPDX-License-Identifier: Apache-2.0
import Logging

extension MemoryEvent {
    /// The level the default log sink uses: errors for failures, violations,
    /// OOM kills and reclaim recursion; warnings for the rest.
    public var logLevel: Logger.Level {
        switch self {
        case .hardeningViolation, .allocationFailure, .oomKill, .reclaimRecursion: return .error
        case .oomVictimStuck, .slowShrinker, .overLimit, .invalidRequest, .allocationStall, .scopeConflict: return .warning
        }
    }

    /// A short message naming what happened; the details are in `logMetadata`.
    public var logMessage: Logger.Message {
        switch self {
        case .allocationFailure(let e): return "allocation failure: \(e.reason)"
        case .allocationStall(let e):
            return e.group.map { "possible memory allocation deadlock: waiting under the max of group \($0)" }
                .map { Logger.Message(stringLiteral: $0) } ?? "possible memory allocation deadlock"
        case .scopeConflict: return "scope conflict"
        case .oomKill(let e): return "out of memory: killed group \(e.victim)"
        case .oomVictimStuck(let e): return "OOM victim \(e.victim) has not released memory"
        case .reclaimRecursion: return "possible reclaim recursion deadlock"
        case .hardeningViolation(let e): return "hardening violation: \(e.kind)"
        case .invalidRequest: return "invalid request"
        case .slowShrinker(let e): return "shrinker \(e.shrinker) missed its deadline"
        case .overLimit: return "process limit below usage"
        }
    }

    /// The event's fields as structured log metadata: `event` (its kind)
    /// and, as far as the event has them, `request`, `policy`, `scope`,
    /// `tier`, `guarantee`, `site`, `group`, `reason` and the numbers.
    public var logMetadata: Logger.Metadata {
        var m: Logger.Metadata = [:]
        func put(_ key: String, _ value: (any CustomStringConvertible)?) {
            if let value { m[key] = .string(value.description) }
        }
        switch self {
        case .allocationFailure(let e):
            m["event"] = "allocationFailure"
            put("request", e.request); put("policy", e.policy); put("scope", e.scope); put("tier", "\(e.tier)")
            put("site", e.site); put("group", e.group); put("reason", e.reason)
            if e.suppressed > 0 { put("suppressed", e.suppressed) }
            put("snapshot", e.snapshot)
        case .allocationStall(let e):
            m["event"] = "allocationStall"
            put("request", e.request); put("policy", e.policy); put("scope", e.scope)
            put("guarantee", e.guarantee.map { "\($0)" }); put("site", e.site); put("attempts", e.attempts)
            put("stalledFor", e.stalledFor); put("group", e.group); put("groupDetail", e.groupDetail)
        case .scopeConflict(let e):
            m["event"] = "scopeConflict"
            put("call", e.call); put("scope", e.scope); put("resolution", e.resolution); put("site", e.site)
        case .oomKill(let e):
            m["event"] = "oomKill"
            put("group", e.victim); put("score", e.score); put("usage", e.usage)
            put("oomScoreAdjust", e.oomScoreAdjust); put("trigger", e.trigger)
        case .oomVictimStuck(let e):
            m["event"] = "oomVictimStuck"
            put("group", e.victim); put("usage", e.usage); put("waited", e.waited)
        case .reclaimRecursion(let e):
            m["event"] = "reclaimRecursion"
            put("lock", e.lock); put("lockSite", e.lockSite); put("domain", e.domain)
            put("site", e.allocationSite); put("shrinker", e.shrinker); put("fix", e.fix)
        case .hardeningViolation(let e):
            m["event"] = "hardeningViolation"
            put("kind", "\(e.kind)"); put("operation", e.operation)
            put("pointer", "0x" + String(e.pointer, radix: 16)); put("detail", e.detail)
        case .invalidRequest(let e):
            m["event"] = "invalidRequest"
            put("operation", e.operation); put("reason", e.reason); put("site", e.site)
        case .slowShrinker(let e):
            m["event"] = "slowShrinker"
            put("shrinker", e.shrinker); put("deadline", e.deadline); put("site", e.allocationSite)
        case .overLimit(let e):
            m["event"] = "overLimit"
            put("limit", e.limit); put("usage", e.usage)
        }
        return m
    }
}

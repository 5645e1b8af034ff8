// SPDX-License-Identifier: Apache-2.0
import MM

extension ScenarioLoader {
    /// A value that decodes but cannot be run, at `path`.
    struct Problem: Error {
        var path: [PathElement]
        var message: String
    }

    static let policies = ["standard", "failFast", "retryWhileProgress", "nonBlocking", "atomic"]
    static let guarantees = ["retryForever", "useReserves", "semantics"]
    static let placements = ["contiguous", "virtual", "automatic"]
    static let actions = ["pressure-spike", "grow-cache", "kill-group", "set-limit", "psi-pressure", "fragment-cache"]
    /// The largest object a scenario cache may have: what an order-3 slab holds (`MemorySystem.makeObjectCache`).
    static let largestCacheObject = 32 << 10

    /// Checks every value against the others and against the arena.
    static func validate(_ s: Scenario) throws(Problem) {
        func check(_ ok: Bool, _ path: [PathElement], _ message: @autoclosure () -> String) throws(Problem) {
            if !ok { throw Problem(path: path, message: message()) }
        }
        let capacity = s.arena.capacity.bytes
        try check(capacity >= 4 << 20 && capacity <= 64 << 30, [.key("arena"), .key("capacity")],
                  "\(s.arena.capacity) is outside 4MiB...64GiB")
        try check(s.duration.value > 0 && s.duration.value <= 3600, [.key("duration")], "\(s.duration) is outside (0, 3600s]")
        if let w = s.watchdog { try check(w.value > 0, [.key("watchdog")], "\(w) must be positive") }
        if let semantics = s.semantics { try check(!semantics.isEmpty, [.key("semantics")], "name at least one semantics") }
        if let w = s.arena.watermarks {
            let path: [PathElement] = [.key("arena"), .key("watermarks")]
            try check(w.min.bytes > 0 && w.min.bytes <= w.low.bytes && w.low.bytes <= w.high.bytes && w.high.bytes < capacity,
                      path, "need 0 < min ≤ low ≤ high < capacity (\(w.min), \(w.low), \(w.high), capacity \(s.arena.capacity))")
        }
        if let i = s.arena.stallReportInterval {
            try check(i.value > 0, [.key("arena"), .key("stallReportInterval")], "\(i) must be positive")
        }
        if let limit = s.arena.limit {
            try check(limit.bytes >= 1 << 20 && limit.bytes <= capacity, [.key("arena"), .key("limit")],
                      "\(limit) is outside 1MiB...capacity (\(s.arena.capacity))")
        }
        if let m = s.arena.pressureMonitor {
            let path: [PathElement] = [.key("arena"), .key("pressureMonitor")]
            try check(m.floor.bytes >= 1 << 20 && m.floor.bytes <= capacity, path + [.key("floor")], "\(m.floor) is outside 1MiB...capacity")
            if let step = m.step { try check(step > 0 && step <= 1, path + [.key("step")], "\(step) is outside (0, 1]") }
            if let r = m.relaxAfter { try check(r.value > 0, path + [.key("relaxAfter")], "\(r) must be positive") }
        }
        var declared: Set<String> = []
        for (i, g) in (s.groups ?? []).enumerated() {
            let path: [PathElement] = [.key("groups"), .index(i)]
            try check(!declared.contains(g.name), path + [.key("name")], "a second group named \"\(g.name)\"")
            if let parent = g.parent {
                try check(declared.contains(parent), path + [.key("parent")], "no group named \"\(parent)\" declared before this one")
            }
            if let adj = g.oomScoreAdjust { try check((-1000...1000).contains(adj), path + [.key("oomScoreAdjust")], "\(adj) is outside -1000...1000") }
            let limits = MemoryLimits(min: g.min?.bytes ?? 0, low: g.low?.bytes ?? 0, high: g.high?.bytes, max: g.max?.bytes)
            if let problem = limits.incoherence { throw Problem(path: path, message: "incoherent limits: \(problem)") }
            if let e = g.exitAllocation {
                try check(e.bytes > 0 && e.bytes <= capacity, path + [.key("exitAllocation")], "\(e) is outside 1...capacity")
            }
            declared.insert(g.name)
        }
        let groups = declared
        let locks = Set((s.locks ?? []).map(\.name))
        let caches = Set((s.caches ?? []).map(\.name))
        let objectSizes = Dictionary((s.caches ?? []).map { ($0.name, $0.objectSize) }, uniquingKeysWith: { a, _ in a })
        var cacheBytes = 0
        for (i, c) in (s.caches ?? []).enumerated() {
            let path: [PathElement] = [.key("caches"), .index(i)]
            try check(c.objectSize.bytes > 0 && c.objectSize.bytes <= min(capacity, Self.largestCacheObject),
                      path + [.key("objectSize")],
                      "\(c.objectSize) is outside 1...\(ByteSize(min(capacity, Self.largestCacheObject))) (a cache's objects come from its own object cache, whose slabs are at most 32 KiB)")
            try check(c.count >= 0, path + [.key("count")], "\(c.count) is negative")
            let (total, overflow) = c.count.multipliedReportingOverflow(by: c.objectSize.bytes)
            cacheBytes += overflow ? Int.max / 2 : total
            try check(!overflow && cacheBytes <= capacity, path + [.key("count")],
                      "\(c.count) objects of \(c.objectSize) (with the caches before it: \(overflow ? "overflow" : ByteSize(cacheBytes).description)) exceed the arena (\(s.arena.capacity))")
            if let seeks = c.seeks { try check(seeks >= 0, path + [.key("seeks")], "\(seeks) is negative") }
            if let lock = c.lock { try check(locks.contains(lock), path + [.key("lock")], "no lock named \"\(lock)\" in locks") }
            if let group = c.group { try check(groups.contains(group), path + [.key("group")], "no group named \"\(group)\" in groups") }
            if let domain = c.domain { try check(!domain.isEmpty, path + [.key("domain")], "empty domain name") }
        }
        try check(!s.workers.isEmpty, [.key("workers")], "a scenario needs at least one worker")
        for (w, worker) in s.workers.enumerated() {
            let path: [PathElement] = [.key("workers"), .index(w)]
            if let t = worker.threads { try check(t >= 1 && t <= 64, path + [.key("threads")], "\(t) is outside 1...64") }
            try check(!worker.operations.isEmpty, path + [.key("operations")], "a worker needs at least one operation")
            for (o, op) in worker.operations.enumerated() {
                let p = path + [.key("operations"), .index(o)]
                try check(op.size.lower >= 1 && op.size.lower <= op.size.upper, p + [.key("size")],
                          "\(op.size) must be positive, smallest first")
                try check(op.size.upper <= capacity, p + [.key("size")], "\(op.size) is above the arena's capacity (\(s.arena.capacity))")
                if let n = op.count { try check(n >= 1 && n <= 100_000, p + [.key("count")], "\(n) is outside 1...100000") }
                if let x = op.placement { try check(placements.contains(x), p + [.key("placement")], "\"\(x)\" is not one of \(placements.joined(separator: ", "))") }
                if let x = op.policy { try check(policies.contains(x), p + [.key("policy")], "\"\(x)\" is not one of \(policies.joined(separator: ", "))") }
                if let x = op.guarantee { try check(guarantees.contains(x), p + [.key("guarantee")], "\"\(x)\" is not one of \(guarantees.joined(separator: ", "))") }
                for (k, scope) in (op.scopes ?? []).enumerated() {
                    do { _ = try LabScopes.parse(scope) } catch { throw Problem(path: p + [.key("scopes"), .index(k)], message: error.message) }
                }
                for (k, lock) in (op.locks ?? []).enumerated() {
                    try check(locks.contains(lock), p + [.key("locks"), .index(k)], "no lock named \"\(lock)\" in locks")
                }
                if let h = op.hold { try check(h.value >= 0 && h.value <= 60, p + [.key("hold")], "\(h) is outside 0...60s") }
                if let r = op.rate { try check(r > 0 && r <= 1e7, p + [.key("rate")], "\(r) is outside (0, 10^7] per second") }
                if let g = op.grow {
                    try check(caches.contains(g), p + [.key("grow")], "no cache named \"\(g)\" in caches")
                    try check(op.size.upper <= objectSizes[g]!.bytes, p + [.key("size")],
                              "\(op.size) is larger than an object of \(g) (\(objectSizes[g]!)): an operation that grows a cache allocates its objects")
                }
                if let g = op.group { try check(groups.contains(g), p + [.key("group")], "no group named \"\(g)\" in groups") }
            }
        }
        for (i, e) in (s.events ?? []).enumerated() {
            let p: [PathElement] = [.key("events"), .index(i)]
            try check(actions.contains(e.action), p + [.key("action")], "\"\(e.action)\" is not one of \(actions.joined(separator: ", "))")
            try check(e.at.value >= 0 && e.at.value <= s.duration.value, p + [.key("at")], "\(e.at) is outside the run (0...\(s.duration))")
            switch e.action {
            case "pressure-spike":
                try check(e.bytes != nil, p, "pressure-spike needs bytes")
                if let g = e.group { try check(groups.contains(g), p + [.key("group")], "no group named \"\(g)\" in groups") }
                try check(e.bytes!.bytes > 0 && e.bytes!.bytes <= capacity, p + [.key("bytes")], "\(e.bytes!) is outside 1...capacity")
            case "set-limit":
                try check(e.bytes != nil, p, "set-limit needs bytes")
                try check(e.bytes!.bytes >= 1 << 20 && e.bytes!.bytes <= capacity, p + [.key("bytes")], "\(e.bytes!) is outside 1MiB...capacity")
            case "fragment-cache":
                try check(e.cache != nil, p, "fragment-cache needs cache")
                try check(caches.contains(e.cache!), p + [.key("cache")], "no cache named \"\(e.cache!)\" in caches")
            case "psi-pressure":
                try check(s.arena.pressureMonitor != nil, p, "psi-pressure needs arena.pressureMonitor")
            case "grow-cache":
                try check(e.bytes != nil && e.cache != nil, p, "grow-cache needs bytes and cache")
                try check(caches.contains(e.cache!), p + [.key("cache")], "no cache named \"\(e.cache!)\" in caches")
                try check(e.bytes!.bytes > 0 && e.bytes!.bytes <= capacity, p + [.key("bytes")], "\(e.bytes!) is outside 1...capacity")
            default:
                try check(e.group != nil, p, "kill-group needs group")
                try check(groups.contains(e.group!), p + [.key("group")], "no group named \"\(e.group!)\" in groups")
            }
        }
    }
}

/// Scope names in scenario files → `AllocationScope`.
enum LabScopes {
    struct ParseError: Error { var message: String }

    static func parse(_ text: String) throws(ParseError) -> AllocationScope {
        let words = text.split(separator: " ").map(String.init)
        guard let first = words.first else { throw ParseError(message: "empty scope") }
        switch first {
        case "excluding":
            guard words.count >= 2 else { throw ParseError(message: "\"excluding\" needs at least one domain, e.g. \"excluding filesystem\"") }
            return words.dropFirst().map(domain).reduce(AllocationScope.none) { $0.union(.excluding($1)) }
        case "noDirectReclaim": return .noDirectReclaim
        case "nonBlocking": return .nonBlocking
        case "quiet": return .quiet
        case "retryForever": return .retryForever
        case "useReserves": return .useReserves
        default:
            throw ParseError(message: "\"\(text)\" is not a scope (excluding <domain>..., noDirectReclaim, nonBlocking, quiet, retryForever, useReserves)")
        }
    }

    static func domain(_ name: String) -> ReclaimDomain {
        switch name {
        case "filesystem": return .filesystem
        case "io": return .io
        default: return ReclaimDomain(name, within: .filesystem)
        }
    }
}

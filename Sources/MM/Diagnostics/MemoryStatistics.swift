// SPDX-License-Identifier: Apache-2.0

/// A snapshot of a `MemorySystem`, with text renderings in the kernel's
/// `/proc` formats. Kernel analogue: `/proc/meminfo`, `/proc/buddyinfo`, `/proc/vmstat`.
public struct MemoryStatistics: Sendable {
    /// Bytes of arena.
    public var capacity: Int
    /// The process budget (`MemorySystem.limit`; the capacity unless it was set).
    public var limit: Int
    /// Free bytes that requests may take: in the buddy lists plus in
    /// per-thread lists, less what the limit withholds (`limit − used`, never below 0).
    public var freeBytes: Int
    /// Free bytes held in per-thread lists (part of `freeBytes`).
    public var perThreadFreeBytes: Int
    /// Free bytes whose memory has been returned to the OS (part of `freeBytes`).
    public var releasedBytes: Int
    /// Bytes of the arena (direct map and vmalloc areas) backed by memory right now (`mincore`).
    public var residentBytes: Int
    /// Bytes of page-frame descriptors backed by memory right now.
    public var metadataResidentBytes: Int
    /// The watermarks in force.
    public var watermarks: Watermarks
    /// Free blocks per order 0...10 in the buddy lists (buddyinfo).
    public var freeBlocksPerOrder: [Int]
    /// Per-shrinker work: scanned, freed, deferred, skipped.
    public var shrinkers: [ShrinkerStatistics]
    /// Usage per group.
    public var groups: [GroupUsage]
    /// Allocation stall pressure, PSI style.
    public var pressure: PressureStatistics
    /// Size of the vmalloc region (address space).
    public var vmallocTotalBytes: Int
    /// Bytes mapped in vmalloc areas.
    public var vmallocUsedBytes: Int
    /// `/proc/vmallocinfo` format: one line per area (range, size, caller, pages, runs).
    public var vmallocinfo: String
    /// Bytes of pages held by slabs (free objects included).
    public var slabBytes: Int
    /// Bytes of pages held by slabs of `.reclaimable` caches (part of `slabBytes`).
    public var reclaimableSlabBytes: Int
    /// One entry per object cache, kmalloc classes first (slabinfo).
    public var slabCaches: [SlabCacheStatistics]
    /// Live allocations per call site, most bytes first; nil unless
    /// `MemoryConfiguration.allocationProfiling` is on (allocinfo).
    public var allocationSites: [AllocationSiteStatistics]?
    /// The page allocator's counters.
    public var pageAllocator: PageAllocatorCounters
    /// The slow path's counters: stalls, OOM steps, failures by kind.
    public var slowPath: SlowPathCounters
    /// Reclaim's and the OOM handler's counters.
    public var reclaim: ReclaimCounters
    /// The virtual allocator's counters.
    public var virtual: VirtualCounters

    /// Every counter as a vmstat line, in a fixed order: the one place
    /// where the typed counters get their `/proc/vmstat` names.
    public var counters: [Counter] {
        let p = pageAllocator, s = slowPath, r = reclaim, v = virtual
        let lines: KeyValuePairs<String, Int> = [
            "nr_free_pages": freeBytes >> 12, "nr_free_pcp": perThreadFreeBytes >> 12,
            "nr_free_pages_lowest": p.lowestFreePages,
            "pgalloc": p.pgalloc, "pgfree": p.pgfree, "pgalloc_fail": p.pgallocFail,
            "pcp_refill": p.pcpRefill, "pcp_drain": p.pcpDrain, "low_watermark_wake": p.lowWatermarkWake,
            "allocstall": s.allocstall, "guaranteed_waits": s.guaranteedWaits, "reserve_unlocks": s.reserveUnlocks,
            "stall_reports": s.stallReports, "scope_conflicts": s.scopeConflicts,
            "oom_invocations": s.oomInvocations, "oom_reap_timeouts": s.oomReapTimeouts,
            "fail_nonblocking": s.failNonBlocking, "fail_failfast": s.failFailFast,
            "fail_retry_while_progress": s.failRetryWhileProgress, "fail_standard": s.failStandard,
            "fault_injected": s.faultsInjected,
            "direct_reclaim_runs": r.directRuns, "direct_reclaim_pages": r.directPages,
            "background_reclaim_runs": r.backgroundRuns, "background_reclaim_pages": r.backgroundPages,
            "background_wakeups": r.backgroundWakeups,
            "oom_kill": r.oomKills, "oom_victim_wait": r.oomVictimWaits, "oom_no_victim": r.oomNoVictim,
            "group_reclaim_runs": r.groupRuns, "group_reclaim_bytes": r.groupBytes,
            "max_force_charge": s.maxForceCharges, "max_fail": s.maxFailures,
            "high_throttle": s.highThrottles, "high_throttle_ms": s.highThrottleMilliseconds,
            "vmalloc_areas": v.areas, "vmalloc_mappings": v.mappings, "vmalloc_alloc": v.allocations,
            "vmalloc_free": v.frees, "vmalloc_fail": v.failures, "vmalloc_fail_map_count": v.mapCountFailures,
            "vmalloc_purge": v.purges,
            "pgrelease": p.pgrelease, "release_runs": p.releaseRuns,
            "invalid_request": p.invalidRequests, "hardening_violation": p.hardeningViolations,
        ]
        return lines.map { Counter(name: $0.key, value: $0.value) }
    }

    /// One group's charge.
    public struct GroupUsage: Sendable, Hashable {
        /// The group's (or counter's) name.
        public var name: String
        /// Bytes charged to the group and its descendants. Kernel: `memory.current`.
        public var usage: Int
        /// Bytes charged to the group itself.
        public var ownUsage: Int
        /// The group's `oomScoreAdjust`.
        public var oomScoreAdjust: Int
        /// The group's limits (`memory.min/low/high/max`).
        public var limits: MemoryLimits = .init()
        /// The group's hierarchical event counts (`memory.events`).
        public var events: MemoryGroupEvents = .init()
        /// The parent group's name, nil for a top-level group.
        public var parent: String? = nil
    }

    /// One vmstat counter.
    public struct Counter: Sendable, Hashable {
        /// The group's (or counter's) name.
        public var name: String
        /// The counter's value (a vmstat line).
        public var value: Int
    }

    /// The value of the vmstat counter `name` (0 if there is no such counter).
    public subscript(counter name: String) -> Int {
        counters.first { $0.name == name }?.value ?? 0
    }

    /// `/proc/meminfo` format: `Name:` padded to 16 columns, value in kB right-aligned in 8.
    public var meminfo: String {
        func line(_ name: String, _ bytes: Int) -> String {
            let label = name + ":"
            let padded = label.count < 16 ? label + String(repeating: " ", count: 16 - label.count) : label + " "
            let value = String(bytes >> 10)
            return padded + String(repeating: " ", count: max(0, 8 - value.count)) + value + " kB\n"
        }
        return line("MemTotal", capacity)
            + line("MemLimit", limit)
            + line("MemFree", freeBytes)
            + line("MemAvailable", freeBytes)
            + line("PerThreadFree", perThreadFreeBytes)
            + line("Released", releasedBytes)
            + line("ArenaResident", residentBytes)
            + line("PageTables", metadataResidentBytes)
            + line("Slab", slabBytes)
            + line("SReclaimable", reclaimableSlabBytes)
            + line("SUnreclaim", slabBytes - reclaimableSlabBytes)
            + line("VmallocTotal", vmallocTotalBytes)
            + line("VmallocUsed", vmallocUsedBytes)
            + line("WatermarkMin", watermarks.min)
            + line("WatermarkLow", watermarks.low)
            + line("WatermarkHigh", watermarks.high)
    }

    /// `/proc/buddyinfo` format: free blocks per order for the one zone.
    public var buddyinfo: String {
        var s = "Node 0, zone    Arena "
        for n in freeBlocksPerOrder {
            let v = String(n)
            s += String(repeating: " ", count: max(0, 6 - v.count)) + v + " "
        }
        return s + "\n"
    }

    /// One block per group in cgroup v2's file formats: `memory.current`,
    /// the four limits (`max` for none) and `memory.events`, each line
    /// prefixed by the group's path (`parent/child`).
    public var groupinfo: String {
        guard !groups.isEmpty else { return "(no groups)\n" }
        let parents = Dictionary(groups.map { ($0.name, $0.parent) }, uniquingKeysWith: { a, _ in a })
        func path(_ g: GroupUsage) -> String {
            var parts = [g.name], next = g.parent, depth = 0
            while let p = next, depth < 64 { parts.append(p); next = parents[p] ?? nil; depth += 1 }
            return parts.reversed().joined(separator: "/")
        }
        func limit(_ v: Int?) -> String { v.map(String.init) ?? "max" }
        var out = ""
        for g in groups {
            let p = path(g)
            out += "\(p) memory.current \(g.usage)\n"
            out += "\(p) memory.min \(g.limits.min)\n\(p) memory.low \(g.limits.low)\n"
            out += "\(p) memory.high \(limit(g.limits.high))\n\(p) memory.max \(limit(g.limits.max))\n"
            let e = g.events
            out += "\(p) memory.events low \(e.low) high \(e.high) max \(e.max) oom \(e.oom) oom_kill \(e.oomKill)\n"
        }
        return out
    }

    /// Shrinkers as lines of `name domain scanned freed deferred skipped stops`.
    public var shrinkerinfo: String {
        "# name domain scanned freed deferred skipped_for_domain stops\n"
            + shrinkers.map { "\($0.name) \($0.domain) \($0.scanned) \($0.freed) \($0.deferred) \($0.skippedForDomain) \($0.stops)\n" }.joined()
    }

    /// `/proc/vmstat` format: `name value` per line.
    public var vmstat: String {
        counters.map { "\($0.name) \($0.value)\n" }.joined()
    }

    /// `/proc/slabinfo` format (version 2.1 columns that apply): one line per cache.
    public var slabinfo: String {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        func num(_ v: Int, _ n: Int) -> String { let s = String(v); return String(repeating: " ", count: max(0, n - s.count)) + s }
        var out = "slabinfo - version: 2.1 (swift-mm)\n"
        out += "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : slabdata <active_slabs> <num_slabs> <cached_in_threads>\n"
        for c in slabCaches {
            out += pad(c.name, 17) + num(c.activeObjects, 8) + num(c.totalObjects, 8) + num(c.objectSize, 7)
                + num(c.objectsPerSlab, 5) + num(c.pagesPerSlab, 3) + " : slabdata" + num(c.slabs, 7) + num(c.slabs, 7)
                + num(c.cachedInThreads, 7) + "\n"
        }
        return out
    }

    /// `/proc/allocinfo` format: live bytes, live calls, call site; empty
    /// (with a hint) when allocation profiling is off.
    public var allocinfo: String { allocinfo(naming: { _ in nil }) }

    /// allocinfo with call sites renamed: `name(site)` replaces a site's
    /// `file:line` where it returns a name (a program's own names for its
    /// call sites, such as a scenario's operations); nil keeps `file:line`.
    /// - Parameter name: the name of a call site, or nil.
    /// - Returns: the `/proc/allocinfo`-format text.
    public func allocinfo(naming name: (CallSite) -> String?) -> String {
        guard let sites = allocationSites else {
            return "# allocinfo is off: set MemoryConfiguration.allocationProfiling = true\n"
        }
        var out = "allocinfo - version: 1.0 (swift-mm)\n#     <size>  <calls> <tag info>\n"
        for s in sites where s.calls > 0 {
            let size = String(s.bytes), calls = String(s.calls)
            out += String(repeating: " ", count: max(0, 12 - size.count)) + size + " "
                + String(repeating: " ", count: max(0, 8 - calls.count)) + calls + " " + (name(s.site) ?? s.site.description) + "\n"
        }
        return out
    }
}

// SPDX-License-Identifier: Apache-2.0
import Logging

/// The configuration of a `MemorySystem`. Validated by `MemorySystem.init`,
/// which throws a `ConfigurationError` naming the field and the rule.
public struct MemoryConfiguration: Sendable {
    /// Smallest arena: one max-order block.
    public static let minimumCapacity = 4 << 20
    /// Largest arena: page frame numbers are 32 bits.
    public static let maximumCapacity = 1 << 44

    /// Bytes of arena ("physical memory"). Rounded down to whole 4 MiB
    /// max-order blocks; at least `minimumCapacity`.
    public var capacity: Int
    /// The process budget at start (R11), `MemorySystem.setLimit` moves it
    /// later; `nil`: the capacity. Clamped to `1 MiB…capacity`.
    public var limit: Int?
    /// How often a guaranteed request that keeps retrying reports a stall.
    public var stallReportInterval: Duration = .seconds(10)
    /// How long reclaim waits for one shrinker call before it goes on
    /// without it (the call finishes on a helper thread; the shrinker is
    /// reported once as `slowShrinker` and skipped until it returns).
    public var shrinkerDeadline: Duration = .milliseconds(100)
    /// What to do when no OOM victim is left.
    public var oomPolicy: OOMPolicy = .failRequests
    /// Run the background reclaimer thread. Kernel analogue: kswapd.
    public var backgroundReclaim: Bool = true
    /// Explicit watermarks; `nil` derives them from `capacity` (see `Watermarks.derived`).
    public var watermarks: Watermarks?
    /// `watermark_scale_factor` for derived watermarks, in 1/10000 of capacity (1...1000).
    public var watermarkScaleFactor: Int = 10
    /// Keep per-thread lists of order 0–3 blocks (the lock-free fast path).
    public var perThreadPageLists: Bool = true
    /// Free blocks of this order or more are returned to the OS
    /// (`MADV_DONTNEED`) while free memory is above `high`;
    /// `nil` turns automatic release off (`releaseFreeMemory()` still works).
    public var releaseOrder: Int? = 9
    /// How long a free block stays resident before it may be released;
    /// `.zero` releases at once.
    public var releaseDelay: Duration = .seconds(1)
    /// What a hardening violation (double free, foreign pointer, …) does.
    public var hardeningAction: HardeningAction = .trap
    /// Debug checks for every kmalloc class, so for every byte allocation up
    /// to 8 KiB: `.redZone` (a write past the end is caught at the free),
    /// `.poison` (a write after free is caught at the next allocation of the
    /// slot), `.zeroOnFree`. Those allocations take the checked, locked path
    /// of the slab layer: a debugging mode, slower and larger. `.reclaimable`
    /// is not a check and is refused. Kernel analogue: `slub_debug=ZP`.
    public var kmallocDebugFlags: ObjectCacheFlags = []
    /// Checked mode for the system's lifetime: dropping the system while
    /// memory is still allocated from it (pages, vmalloc areas, live objects)
    /// stops the process with a message saying how much, instead of letting
    /// those pointers dangle silently. Off by default, as `free` of a pool
    /// with live objects is the caller's contract elsewhere.
    /// Kernel analogue: the "objects remaining on kmem_cache_close" report.
    public var trapsOnMemoryOutstandingAtDrop: Bool = false
    /// Log every event through swift-log (with `logger`) in addition to the added sinks.
    public var logsEvents: Bool = true
    /// The logger events go to when `logsEvents` is on: a short message per
    /// event at `MemoryEvent.logLevel` with its fields as metadata (request,
    /// policy, scope, tier, site, group, reason…). `nil` (the default): a
    /// `Logger(label: "mm")` made when the system is created, so that a
    /// configuration alone never touches the logging system.
    public var logger: Logger?
    /// Keep live bytes and allocations per call site (`statistics().allocinfo`).
    /// While on, every request takes the slow path; while off it costs nothing.
    /// Kernel analogue: `CONFIG_MEM_ALLOC_PROFILING` (`sysctl vm.mem_profiling`).
    public var allocationProfiling: Bool = false
    /// Reclaim rounds a `.retryWhileProgress` or `.standard` request makes
    /// before it gives up (or, for `.standard`, invokes the OOM handler).
    /// Kernel analogue: `MAX_RECLAIM_RETRIES`.
    public var maxReclaimRetries: Int = 16
    /// How long a request waits for an OOM victim to release memory before
    /// it retries (and the victim is reported as stuck).
    public var oomReapTimeout: Duration = .seconds(2)
    /// Mappings the vmalloc layer may create; `nil`: half of what
    /// `vm.max_map_count` leaves the process. Allocations that would exceed
    /// it fail cleanly (nil and an event) instead of the kernel refusing.
    public var maxVirtualMappings: Int?
    /// Deliberate failures of fallible requests, for testing error paths.
    public var faultInjection: FaultInjection?
    /// Name of the direct map in `/proc/self/maps` (`[anon:NAME]`, where the
    /// kernel supports naming anonymous mappings).
    public var name: String = "swift-mm"

    /// A configuration with `capacity` bytes and defaults for the rest.
    public init(capacity: Int) {
        self.capacity = capacity
    }

    /// The watermarks in force: explicit ones, or the derived ones.
    public var effectiveWatermarks: Watermarks {
        watermarks ?? .derived(capacity: roundedCapacity, scaleFactor: watermarkScaleFactor)
    }

    var roundedCapacity: Int { capacity & ~(MemoryConfiguration.minimumCapacity - 1) }

    /// Checks every field; returns the configuration with `capacity` rounded.
    func validated() throws(ConfigurationError) -> MemoryConfiguration {
        guard !kmallocDebugFlags.contains(.reclaimable) else {
            throw ConfigurationError(field: "kmallocDebugFlags", message: ".reclaimable is not a debug check; only .redZone, .poison and .zeroOnFree")
        }
        guard capacity >= MemoryConfiguration.minimumCapacity else {
            throw ConfigurationError(field: "capacity", message: "\(capacity) bytes is below the minimum of \(MemoryConfiguration.minimumCapacity) bytes (one 4 MiB max-order block)")
        }
        guard capacity <= MemoryConfiguration.maximumCapacity else {
            throw ConfigurationError(field: "capacity", message: "\(capacity) bytes is above the maximum of \(MemoryConfiguration.maximumCapacity) bytes (2^32 pages)")
        }
        guard (1...1000).contains(watermarkScaleFactor) else {
            throw ConfigurationError(field: "watermarkScaleFactor", message: "\(watermarkScaleFactor) is outside 1...1000")
        }
        var result = self
        result.capacity = roundedCapacity
        let w = result.effectiveWatermarks
        guard w.min > 0, w.min < w.low, w.low < w.high, w.high < result.capacity else {
            throw ConfigurationError(field: "watermarks", message: "need 0 < min < low < high < capacity; got \(w) with capacity \(result.capacity >> 10) kB")
        }
        guard PageWatermarks(w).min < PageWatermarks(w).low, PageWatermarks(w).low < PageWatermarks(w).high else {
            throw ConfigurationError(field: "watermarks", message: "min, low and high must differ by at least one page; got \(w)")
        }
        if let limit, limit <= 0 {
            throw ConfigurationError(field: "limit", message: "\(limit) must be positive (it is clamped to 1 MiB…capacity)")
        }
        if let order = releaseOrder, !(0...maxOrder).contains(order) {
            throw ConfigurationError(field: "releaseOrder", message: "\(order) is outside 0...\(maxOrder)")
        }
        guard releaseDelay >= .zero else {
            throw ConfigurationError(field: "releaseDelay", message: "\(releaseDelay) is negative")
        }
        guard shrinkerDeadline > .zero else {
            throw ConfigurationError(field: "shrinkerDeadline", message: "\(shrinkerDeadline) must be positive")
        }
        guard stallReportInterval > .zero else {
            throw ConfigurationError(field: "stallReportInterval", message: "\(stallReportInterval) must be positive")
        }
        guard (1...1000).contains(maxReclaimRetries) else {
            throw ConfigurationError(field: "maxReclaimRetries", message: "\(maxReclaimRetries) is outside 1...1000")
        }
        guard oomReapTimeout > .zero else {
            throw ConfigurationError(field: "oomReapTimeout", message: "\(oomReapTimeout) must be positive")
        }
        if let m = maxVirtualMappings, m < 2 {
            throw ConfigurationError(field: "maxVirtualMappings", message: "\(m) is below 2 (an area needs its mapping and the split of the reservation)")
        }
        result.faultInjection = try faultInjection?.validated()
        return result
    }
}

/// A configuration that `MemorySystem.init` refuses.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The fields of `MemoryConfiguration` that validation checks, to match on.
    public enum Field: String, Sendable, Hashable, CaseIterable {
        case capacity, limit, watermarks, watermarkScaleFactor, releaseOrder, releaseDelay
        case maxReclaimRetries, maxVirtualMappings, oomReapTimeout, shrinkerDeadline, stallReportInterval
        case kmallocDebugFlags
        case faultInjectionProbability = "faultInjection.probability"
        case faultInjectionInterval = "faultInjection.interval"
        case faultInjectionTimes = "faultInjection.times"
        case faultInjectionSpace = "faultInjection.space"
    }
    /// The offending field, to match on.
    public var code: Field
    /// The offending field of `MemoryConfiguration`, by name (`code.rawValue`).
    public var field: String { code.rawValue }
    /// The rule it breaks, with the value.
    public var message: String

    init(field: String, message: String) {
        guard let code = Field(rawValue: field) else { preconditionFailure("unknown configuration field \(field)") }
        self.code = code
        self.message = message
    }

    /// A one-line description, as events and reports print it.
    public var description: String { "invalid MemoryConfiguration.\(field): \(message)" }
}

extension FaultInjection {
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

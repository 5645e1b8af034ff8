// SPDX-License-Identifier: Apache-2.0

/// A snapshot of a `MemorySystem`, with text renderings in the kernel's
/// `/proc` formats. Kernel analogue: `/proc/meminfo`, `/proc/buddyinfo`, `/proc/vmstat`.
public struct MemoryStatistics: Sendable {
    /// Bytes of arena.
    public var capacity: Int
    /// Free bytes: in the buddy lists plus in per-thread lists.
    public var freeBytes: Int
    /// Free bytes held in per-thread lists (part of `freeBytes`).
    public var perThreadFreeBytes: Int
    /// Free bytes whose memory has been returned to the OS (part of `freeBytes`).
    public var releasedBytes: Int
    /// Bytes of the arena's memfd backed by memory right now.
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
    /// Event and allocator counters (vmstat), in a fixed order.
    public var counters: [Counter]

    /// One group's charge.
    public struct GroupUsage: Sendable, Hashable {
        public var name: String
        public var usage: Int
        public var ownUsage: Int
        public var oomScoreAdjust: Int
    }

    /// One vmstat counter.
    public struct Counter: Sendable, Hashable {
        public var name: String
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
            + line("MemFree", freeBytes)
            + line("MemAvailable", freeBytes)
            + line("PerThreadFree", perThreadFreeBytes)
            + line("Released", releasedBytes)
            + line("ArenaResident", residentBytes)
            + line("PageTables", metadataResidentBytes)
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

    /// Shrinkers as lines of `name domain scanned freed deferred skipped stops`.
    public var shrinkerinfo: String {
        "# name domain scanned freed deferred skipped_for_domain stops\n"
            + shrinkers.map { "\($0.name) \($0.domain) \($0.scanned) \($0.freed) \($0.deferred) \($0.skippedForDomain) \($0.stops)\n" }.joined()
    }

    /// `/proc/vmstat` format: `name value` per line.
    public var vmstat: String {
        counters.map { "\($0.name) \($0.value)\n" }.joined()
    }
}

// SPDX-License-Identifier: Apache-2.0

/// Live bytes and allocations per call site, kept when
/// `MemoryConfiguration.allocationProfiling` is on. While it is on, every
/// request takes the slow path (the fast paths are closed), so the profile
/// costs nothing when it is off: no branch on the fast path is added.
/// Kernel analogue: `CONFIG_MEM_ALLOC_PROFILING` and `/proc/allocinfo`.
final class AllocationProfile: Sendable {
    private struct State: Sendable {
        var live: [UInt: (site: CallSite, bytes: Int)] = [:]
        var sites: [CallSite: AllocationSiteStatistics] = [:]
    }
    private let state = Locked(State())

    func recordAllocation(_ pointer: UnsafeMutableRawPointer, bytes: Int, site: CallSite) {
        state.withLock { s in
            s.live[UInt(bitPattern: pointer)] = (site, bytes)
            s.sites[site, default: AllocationSiteStatistics(site: site)].add(bytes: bytes)
        }
    }

    /// Forgets `pointer` if it was recorded (internal allocations are not).
    func recordFree(_ pointer: UnsafeMutableRawPointer) {
        state.withLock { s in
            guard let entry = s.live.removeValue(forKey: UInt(bitPattern: pointer)) else { return }
            s.sites[entry.site]?.remove(bytes: entry.bytes)
        }
    }

    /// Sites with live allocations or any history, most live bytes first.
    func snapshot() -> [AllocationSiteStatistics] {
        state.withLock { s in
            s.sites.values.sorted { ($0.bytes, $0.totalCalls, $0.site.description) > ($1.bytes, $1.totalCalls, $1.site.description) }
        }
    }
}

/// One line of allocinfo: what a call site has allocated.
public struct AllocationSiteStatistics: Sendable, Hashable {
    /// `#fileID:#line` of the allocating call.
    public var site: CallSite
    /// Bytes allocated there and not freed yet.
    public var bytes = 0
    /// Allocations made there and not freed yet.
    public var calls = 0
    /// Allocations made there in total.
    public var totalCalls = 0
    /// Bytes allocated there in total.
    public var totalBytes = 0

    init(site: CallSite) { self.site = site }

    mutating func add(bytes n: Int) {
        bytes += n; calls += 1; totalCalls += 1; totalBytes += n
    }

    mutating func remove(bytes n: Int) {
        bytes -= n; calls -= 1
    }
}

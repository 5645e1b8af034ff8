// SPDX-License-Identifier: Apache-2.0
import DequeModule
import Foundation
import MM
import MMLab
import Synchronization

/// `mmctl bench budgets`: what budgets cost and how fast they act.
/// - `setlimit_vs_reclaim`: the time from `setLimit` to usage under the new
///   limit (background reclaim through a shrinker), against the same bytes
///   freed by calling `reclaim(bytes:)` directly on the same cache: the
///   overhead of doing it asynchronously through the limit. The bytes are
///   1 GiB at scale 1.
/// - `charged64_vs_uncharged`: a charged 64-byte allocate + free pair (a
///   group with a max; the charged fast paths of the allocation and the
///   free) against the uncharged pair.
struct BudgetsBench {
    var scale: Double

    /// A cache of 4 KiB pages, freed oldest first.
    final class PageCache: Shrinker, @unchecked Sendable {  // `pages` behind a lock
        let name = "bench-page-cache"
        let domain: ReclaimDomain? = nil
        let mm: MemorySystem
        let pages = SharedValue(Deque<UInt>())
        init(_ mm: MemorySystem) { self.mm = mm }
        func fill(bytes: Int) {
            for _ in 0..<(bytes >> 12) {
                guard let p = mm.allocatePages(order: 0, policy: .nonBlocking) else { break }
                p.storeBytes(of: 1, as: UInt64.self)
                pages.withLock { $0.append(UInt(bitPattern: p)) }
            }
        }
        func countObjects(_ control: ShrinkControl) -> Int { pages.get().count }
        func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
            var freed = 0
            for _ in 0..<control.objectsToScan {
                guard let a = pages.withLock({ $0.popFirst() }) else { break }
                mm.freePages(UnsafeMutableRawPointer(bitPattern: a)!, order: 0)
                freed += 1
            }
            return .freed(freed)
        }
    }

    func run() throws -> [BenchResult] {
        let bytes = max(64 << 20, Int(Double(1 << 30) * scale)) & ~((1 << 20) - 1)
        var config = MemoryConfiguration(capacity: bytes + (bytes >> 1) + (64 << 20))
        config.logsEvents = false
        let mm = try MemorySystem(config)
        let cache = PageCache(mm)
        let registration = mm.registerShrinker(cache)
        defer { registration.unregister() }

        // The same bytes freed directly by proactive reclaim (the control).
        cache.fill(bytes: bytes + (bytes >> 2))
        var start = ContinuousClock.now
        _ = mm.reclaim(bytes: bytes)
        let direct = ContinuousClock.now - start
        // Then through the limit: usage must come down by `bytes`.
        cache.pages.withLock { list in
            while let a = list.popFirst() { mm.freePages(UnsafeMutableRawPointer(bitPattern: a)!, order: 0) }
        }
        cache.fill(bytes: bytes + (bytes >> 2))
        let used = mm.configuration.capacity - mm.statistics().freeBytes
        start = ContinuousClock.now
        mm.setLimit(used - bytes + mm.watermarks.high + (1 << 20))
        while mm.statistics().freeBytes < mm.watermarks.low {
            usleep(200)
            if ContinuousClock.now - start > .seconds(60) { break }
        }
        let throughLimit = ContinuousClock.now - start
        mm.setLimit(mm.configuration.capacity)

        // Charged against uncharged 64-byte pairs.
        let group = mm.makeGroup(name: "bench", limits: .init(max: 64 << 20))
        var charged = AllocationPolicy.standard
        charged.group = group
        let pairs = max(10_000, Int(2_000_000 * scale))
        let plain = bestNanosecondsPerIteration(iterations: pairs) { n in
            for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 64).unsafelyUnwrapped) }
        }
        let chargedNs = bestNanosecondsPerIteration(iterations: pairs) { n in
            for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: 64, policy: charged).unsafelyUnwrapped) }
        }
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        return [
            BenchResult(key: "setlimit_vs_reclaim", value: ms(throughLimit) / max(0.001, ms(direct)), goal: "in words",
                        detail: "\(bytes >> 20) MiB: through setLimit \(String(format: "%.0f", ms(throughLimit))) ms, reclaim(bytes:) \(String(format: "%.0f", ms(direct))) ms"),
            BenchResult(key: "charged64_vs_uncharged", value: chargedNs / plain, goal: "in words",
                        detail: "charged \(String(format: "%.1f", chargedNs)) ns, uncharged \(String(format: "%.1f", plain)) ns per pair"),
        ]
    }
}

// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// The three free-memory thresholds of the page allocator, in bytes.
/// Kernel analogue: a zone's `WMARK_MIN`, `WMARK_LOW`, `WMARK_HIGH`.
///
/// - Below `low` the background reclaimer is woken and every request takes
///   the slow path.
/// - Below `min` ordinary requests fail or reclaim directly; only reserve
///   tiers go further (see `ReserveTier`).
/// - The background reclaimer reclaims until free memory is above `high`.
public struct Watermarks: Sendable, Hashable, CustomStringConvertible {
    /// Bytes below which only reserve tiers may allocate. Kernel: `WMARK_MIN`.
    public var min: Int
    /// Bytes below which the background reclaimer is woken. Kernel: `WMARK_LOW`.
    public var low: Int
    /// Bytes the background reclaimer reclaims up to. Kernel: `WMARK_HIGH`.
    public var high: Int

    /// Watermarks given explicitly; validated when the system is created
    /// (`0 < min < low < high < capacity`, each a whole number of pages after rounding up).
    public init(min: Int, low: Int, high: Int) {
        self.min = min
        self.low = low
        self.high = high
    }

    /// The kernel's formulas applied to the arena's capacity:
    /// - `min = clamp(sqrt(capacityKiB × 16) KiB, 128 KiB, 64 MiB)`
    ///   (`init_per_zone_wmark_min`; the upper clamp is 64 MiB where the kernel uses 256 MiB);
    /// - `gap = max(min / 4, capacity × scaleFactor / 10000)`
    ///   (`watermark_scale_factor`, default 10 = 0.1 %);
    /// - `low = min + gap`, `high = min + 2 × gap`.
    /// - Parameters:
    ///   - capacity: the arena (or limit) in bytes.
    ///   - scaleFactor: `watermark_scale_factor`, in 1/10000 (default 10).
    /// - Returns: the watermarks.
    public static func derived(capacity: Int, scaleFactor: Int = 10) -> Watermarks {
        let capacityKiB = Double(capacity / 1024)
        var minKiB = Int((capacityKiB * 16).squareRoot())
        minKiB = Swift.min(Swift.max(minKiB, 128), 64 * 1024)
        let minBytes = minKiB * 1024
        let gap = Swift.max(minBytes / 4, capacity * scaleFactor / 10_000)
        return Watermarks(min: minBytes, low: minBytes + gap, high: minBytes + 2 * gap)
    }

    /// A one-line description, as events and reports print it.
    public var description: String { "min \(min >> 10) kB, low \(low >> 10) kB, high \(high >> 10) kB" }
}

/// Watermarks in pages, as the allocator uses them.
struct PageWatermarks: Sendable, Equatable {
    let min: Int
    let low: Int
    let high: Int

    init(min: Int, low: Int, high: Int) {
        self.min = min
        self.low = low
        self.high = high
    }

    init(_ w: Watermarks) {
        func pages(_ bytes: Int) -> Int { (bytes + pageSize - 1) >> pageShift }
        min = pages(w.min)
        low = pages(w.low)
        high = pages(w.high)
    }
}

/// The watermarks in force, changed when the process limit moves (R11):
/// one atomic each, read without a lock by the slow paths.
final class WatermarkWords: Sendable {
    private let min: Atomic<Int>, low: Atomic<Int>, high: Atomic<Int>

    init(_ w: PageWatermarks) {
        min = Atomic(w.min)
        low = Atomic(w.low)
        high = Atomic(w.high)
    }

    var current: PageWatermarks {
        PageWatermarks(min: min.load(ordering: .relaxed), low: low.load(ordering: .relaxed), high: high.load(ordering: .relaxed))
    }

    func store(_ w: PageWatermarks) {
        min.store(w.min, ordering: .relaxed)
        low.store(w.low, ordering: .relaxed)
        high.store(w.high, ordering: .relaxed)
    }
}

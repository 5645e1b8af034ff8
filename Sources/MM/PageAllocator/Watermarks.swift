// SPDX-License-Identifier: Apache-2.0

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
@usableFromInline
struct PageWatermarks: Sendable {
    @usableFromInline let min: Int
    @usableFromInline let low: Int
    @usableFromInline let high: Int

    init(_ w: Watermarks) {
        func pages(_ bytes: Int) -> Int { (bytes + pageSize - 1) >> pageShift }
        min = pages(w.min)
        low = pages(w.low)
        high = pages(w.high)
    }
}

// SPDX-License-Identifier: Apache-2.0

/// How far below the `min` watermark a request may take pages.
/// Kernel analogue: the `ALLOC_*` watermark flags of the page allocator.
///
/// | tier | who gets it | may allocate down to |
/// |---|---|---|
/// | `.none` | ordinary requests | `min` |
/// | `.high` | `reserve: .high` (`__GFP_HIGH`, `ALLOC_MIN_RESERVE`) | `min/2` |
/// | `.atomic` | non-blocking + `.high` (`GFP_ATOMIC`, `ALLOC_NON_BLOCK`) | `min/4` |
/// | `.oomVictim` | allocations charged to an OOM victim (`ALLOC_OOM`) | `min/8` |
/// | `.emergency` | reclaim contexts (`ALLOC_NO_WATERMARKS`, `PF_MEMALLOC`) | 0 |
public enum ReserveTier: Int, Sendable, Hashable, Comparable, CaseIterable, CustomStringConvertible {
    case none, high, atomic, oomVictim, emergency

    /// Orders by how far below `min` the tier may go.
    public static func < (a: ReserveTier, b: ReserveTier) -> Bool { a.rawValue < b.rawValue }

    /// The lowest free-page count this tier may leave behind, given `min`.
    /// - Parameter min: the `min` watermark, in pages.
    /// - Returns: the free pages this tier must leave.
    @inlinable
    public func floor(min: Int) -> Int {
        switch self {
        case .none: return min
        case .high: return min / 2
        case .atomic: return min / 4
        case .oomVictim: return min / 8
        case .emergency: return 0
        }
    }

    /// A one-line description, as events and reports print it.
    public var description: String {
        switch self {
        case .none: return "none"
        case .high: return "high"
        case .atomic: return "atomic"
        case .oomVictim: return "oom-victim"
        case .emergency: return "emergency"
        }
    }
}

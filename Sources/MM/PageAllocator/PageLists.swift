// SPDX-License-Identifier: Apache-2.0
public import CMMShims
import Synchronization

/// Orders served by per-thread page lists: 0 ... `costlyOrder`.
@usableFromInline let perThreadOrderCount = costlyOrder + 1

/// Largest per-thread list, in blocks, of `order` (0...3): 64, 32, 16, 16.
/// A function of literals, not a global array: a global would be
/// initialised lazily, behind a `swift_once`, on the fast path.
@inlinable @inline(__always)
func perThreadListLimit(_ order: Int) -> Int {
    order == 0 ? 64 : (order == 1 ? 32 : 16)
}

/// A thread's lists of free blocks of orders 0–3, taken from one system's
/// buddy zone in batches so that the common allocate/free pair needs no
/// lock. Kernel analogue: `struct per_cpu_pages` (the pcp lists), per thread.
@usableFromInline
struct PageListsRecord: ~Copyable {
    /// Blocks in each order's list.
    @usableFromInline let counts: InlineArray<4, Atomic<Int>>
    /// Pages handed out from and returned to the lists (statistics).
    @usableFromInline let allocated: Atomic<Int>
    @usableFromInline let freed: Atomic<Int>
    /// The lists' slots (pfns), order after order, each
    /// `perThreadListLimit(order)` long; the most recently freed block last.
    @usableFromInline var slots: InlineArray<128, UInt32>
}

/// The page lists kind of per-thread cache.
@usableFromInline
enum PageListsKind: PerThreadCacheKind {
    @usableFromInline static var recordByteCount: Int { MemoryLayout<PageListsRecord>.size }

    @inlinable @inline(__always)
    static var threadSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?> { cmm_page_lists_slot() }

    @inlinable @inline(__always)
    static var fastPathSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?> { cmm_page_lists_fast_slot() }

    /// None: the page fast path tests for a record.
    @usableFromInline static var emptyRecord: UnsafeMutableRawPointer? { nil }

    @usableFromInline
    static func initializeRecord(at record: UnsafeMutableRawPointer) {
        record.bindMemory(to: PageListsRecord.self, capacity: 1).initialize(to: PageListsRecord(
            counts: InlineArray { _ in Atomic(0) }, allocated: Atomic(0), freed: Atomic(0), slots: InlineArray(repeating: 0)))
    }

    /// Returns the blocks to their system at thread exit.
    @usableFromInline static let threadExitKey = ThreadExitKey { raw in
        guard let raw else { return }
        PageAllocator.lists.threadExited(raw)
    }
}

/// A thread's page lists.
@usableFromInline
typealias PageLists = PerThreadCache<PageListsKind>

extension PerThreadCache where Kind == PageListsKind {
    /// The typed record.
    @inlinable @inline(__always)
    var record: UnsafeMutablePointer<PageListsRecord> { recordBase.assumingMemoryBound(to: PageListsRecord.self) }

    /// Where the slots of `order`'s list start: after the lists of the
    /// lower orders (0, 64, 96, 112 for the limits 64, 32, 16, 16).
    @inlinable @inline(__always)
    static func slotStart(_ order: Int) -> Int {
        order == 0 ? 0 : (order == 1 ? 64 : (order == 2 ? 96 : 112))
    }

    /// Blocks in `order`'s list.
    @inlinable @inline(__always)
    func count(_ order: Int) -> Int { record.pointee.counts[order].load(ordering: .relaxed) }

    /// Pops the most recently freed block of `order`: its pfn, or nil when
    /// the list is empty. Counts the pages as allocated from the lists.
    @inlinable @inline(__always)
    func pop(_ order: Int) -> Int? {
        let n = count(order)
        guard n > 0 else { return nil }
        let pfn = Int(record.pointee.slots[Self.slotStart(order) &+ n &- 1])
        record.pointee.counts[order].store(n &- 1, ordering: .relaxed)
        Self.bump(record.pointee.allocated, by: 1 &<< order)
        return pfn
    }

    /// Pushes a freed block of `order` if its list has room below `limit`.
    @inlinable @inline(__always)
    func push(_ pfn: Int, order: Int, limit: Int) -> Bool {
        let n = count(order)
        guard n < limit else { return false }
        record.pointee.slots[Self.slotStart(order) &+ n] = UInt32(truncatingIfNeeded: pfn)
        record.pointee.counts[order].store(n &+ 1, ordering: .relaxed)
        Self.bump(record.pointee.freed, by: 1 &<< order)
        return true
    }

    /// Adds to a relaxed counter without a read-modify-write instruction:
    /// only the owner thread writes these counters.
    @inlinable @inline(__always)
    static func bump(_ counter: borrowing Atomic<Int>, by n: Int) {
        counter.store(counter.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Slot `i` of `order`'s list (slow paths: refill and drain move runs of slots).
    func slot(_ order: Int, _ i: Int) -> Int { Int(record.pointee.slots[Self.slotStart(order) + i]) }

    func setSlot(_ order: Int, _ i: Int, _ pfn: Int) {
        record.pointee.slots[Self.slotStart(order) + i] = UInt32(pfn)
    }

    /// Sets `order`'s count (slow paths, after moving slots).
    func setCount(_ order: Int, _ n: Int) { record.pointee.counts[order].store(n, ordering: .relaxed) }

    /// Total pages held in all four lists.
    var cachedPages: Int {
        var total = 0
        for order in 0..<perThreadOrderCount { total += count(order) << order }
        return total
    }

    /// Empties the lists without returning their blocks.
    func forgetBlocks() {
        for order in 0..<perThreadOrderCount { setCount(order, 0) }
    }
}

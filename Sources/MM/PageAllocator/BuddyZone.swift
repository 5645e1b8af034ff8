// SPDX-License-Identifier: Apache-2.0

/// The buddy free lists of the arena and their counters; always accessed
/// under the zone lock (`PageAllocator.zone`).
/// Kernel analogue: `struct zone`'s `free_area[]` and `rmqueue`/`__free_one_page`.
///
/// Free lists are intrusive doubly linked lists through the page-frame
/// descriptors, so freeing never touches user memory. Blocks whose memory was
/// returned to the OS go to the tail of their list and warm blocks to the
/// head, so warm memory is reused first.
///
/// Metadata is as lazy as the arena: the largest blocks above the
/// *frontier* have never been handed out, are on no list and have all-zero
/// descriptors that nobody has touched. When the lists have no block large
/// enough, the block at the frontier is taken (its head descriptor written
/// then), so creating a zone of any size writes no descriptor at all.
/// Kernel analogue: deferred `struct page` initialisation
/// (`deferred_init_memmap`), which also initialises memory map sections on
/// demand instead of at boot.
struct BuddyZone: @unchecked Sendable {  // raw pointers into the arena; guarded by the zone Mutex
    let frames: UnsafeMutablePointer<PageFrame>
    let pageCount: Int
    private(set) var heads: [UInt32]
    private(set) var tails: [UInt32]
    /// Free blocks per order (buddyinfo).
    private(set) var blockCounts: [Int]
    /// Pages in free blocks.
    private(set) var freePages = 0
    /// Pages in free blocks whose memory has been returned to the OS (or
    /// was never touched: the blocks above the frontier count here too).
    private(set) var releasedPages = 0
    /// Free pages the process limit withholds: the arena less the limit
    /// (R11). They stay on the lists, so buddies still merge, but no request
    /// may take them: `allows` counts only `availablePages`.
    var withheldPages = 0
    /// Free pages requests may take: may be negative after the limit was lowered below usage.
    var availablePages: Int { freePages - withheldPages }
    /// First page of the never-used region: every largest block from here to
    /// the end is free, listed nowhere, its descriptors untouched zeros.
    private(set) var frontier = 0

    /// Free largest blocks above the frontier.
    var untouchedBlocks: Int { (pageCount - frontier) >> maxOrder }

    init(frames: UnsafeMutablePointer<PageFrame>, pageCount: Int, tick: UInt32) {
        precondition(pageCount % (1 << maxOrder) == 0)
        self.frames = frames
        self.pageCount = pageCount
        heads = Array(repeating: PageFrame.none, count: maxOrder + 1)
        tails = heads
        blockCounts = Array(repeating: 0, count: maxOrder + 1)
        // Everything starts above the frontier: free, untouched, released.
        freePages = pageCount
        releasedPages = pageCount
    }

    /// Takes the largest block at the frontier onto the free lists (as a
    /// released block, which it is); false when the frontier is at the end.
    private mutating func advanceFrontier() -> Bool {
        guard frontier < pageCount else { return false }
        let pfn = frontier
        frontier += 1 << maxOrder
        freePages -= 1 << maxOrder
        releasedPages -= 1 << maxOrder
        frames[pfn].flags = PageFrame.flagReleased
        link(pfn, order: maxOrder)
        return true
    }

    /// Whether taking a block of `order` leaves at least `floor` free pages.
    /// Kernel analogue: `__zone_watermark_ok`.
    @inline(__always)
    func allows(order: Int, floor: Int) -> Bool {
        availablePages - (1 << order) >= floor
    }

    // MARK: Lists

    private mutating func link(_ pfn: Int, order: Int) {
        let f = frames + pfn
        f.pointee.state = PageState.free.rawValue
        f.pointee.order = UInt8(order)
        let released = f.pointee.flags & PageFrame.flagReleased != 0
        let p = UInt32(pfn)
        if heads[order] == PageFrame.none {
            f.pointee.next = PageFrame.none
            f.pointee.prev = PageFrame.none
            heads[order] = p
            tails[order] = p
        } else if released {
            f.pointee.prev = tails[order]
            f.pointee.next = PageFrame.none
            frames[Int(tails[order])].next = p
            tails[order] = p
        } else {
            f.pointee.next = heads[order]
            f.pointee.prev = PageFrame.none
            frames[Int(heads[order])].prev = p
            heads[order] = p
        }
        blockCounts[order] += 1
        freePages += 1 << order
        if released { releasedPages += 1 << order }
    }

    private mutating func unlink(_ pfn: Int, order: Int) {
        let f = frames + pfn
        let next = f.pointee.next, prev = f.pointee.prev
        if prev == PageFrame.none { heads[order] = next } else { frames[Int(prev)].next = next }
        if next == PageFrame.none { tails[order] = prev } else { frames[Int(next)].prev = prev }
        f.pointee.next = PageFrame.none
        f.pointee.prev = PageFrame.none
        blockCounts[order] -= 1
        freePages -= 1 << order
        if f.pointee.flags & PageFrame.flagReleased != 0 { releasedPages -= 1 << order }
    }

    // MARK: Allocation and free

    /// Takes a free block of exactly `order`, splitting a larger one if
    /// needed, and returns its first pfn; `nil` when no block is large
    /// enough. The caller sets the head's state. Kernel analogue: `__rmqueue_smallest` + `expand`.
    ///
    /// Warm memory first: the smallest block that holds memory (a list's
    /// head is warm unless the whole list is released) is split before a
    /// smaller released one is used, so that the process's resident memory
    /// is reused instead of faulting in more (jemalloc likewise reuses dirty
    /// extents before clean ones). Then the smallest released block, then
    /// the frontier.
    mutating func take(order: Int) -> Int? {
        var smallestReleased: Int?
        for current in order...maxOrder {
            let head = heads[current]
            guard head != PageFrame.none else { continue }
            if frames[Int(head)].flags & PageFrame.flagReleased == 0 {
                return split(Int(head), from: current, to: order)
            }
            if smallestReleased == nil { smallestReleased = current }
        }
        if let current = smallestReleased { return split(Int(heads[current]), from: current, to: order) }
        guard advanceFrontier() else { return nil }
        return split(Int(heads[maxOrder]), from: maxOrder, to: order)
    }

    /// Takes a free block of exactly `order` whose memory is not resident
    /// (released, or above the frontier) when there is one, else any block
    /// as `take` would; returns its first pfn and whether it was released.
    /// For callers that discard the block's direct-map memory anyway
    /// (vmalloc): a released block needs no discard, and the warm blocks
    /// stay for the callers that use them. Released blocks sit at the tails.
    mutating func takeReleased(order: Int) -> (pfn: Int, released: Bool)? {
        for current in order...maxOrder {
            let tail = tails[current]
            if tail != PageFrame.none && frames[Int(tail)].flags & PageFrame.flagReleased != 0 {
                return (split(Int(tail), from: current, to: order), true)
            }
        }
        if advanceFrontier() { return (split(Int(tails[maxOrder]), from: maxOrder, to: order), true) }
        return take(order: order).map { ($0, false) }
    }

    /// Unlinks the free block `pfn` of order `current` and splits it down to
    /// `order`, listing the upper halves (which inherit its released state).
    private mutating func split(_ pfn: Int, from current: Int, to order: Int) -> Int {
        var current = current
        unlink(pfn, order: current)
        let released = frames[pfn].flags & PageFrame.flagReleased
        while current > order {
            current -= 1
            let buddy = pfn + (1 << current)
            frames[buddy].flags = released
            frames[buddy].freedTick = frames[pfn].freedTick
            link(buddy, order: current)
        }
        frames[pfn].order = UInt8(order)
        frames[pfn].flags &= ~PageFrame.flagReleased
        frames[pfn].state = PageState.tail.rawValue  // caller decides
        return pfn
    }

    /// Returns a block to the free lists, merging it with its free buddies.
    /// Returns the pfn and order of the resulting free block.
    /// Kernel analogue: `__free_one_page`.
    ///
    /// A block coming back from its owner may hold data, so the merged block
    /// is not "released" — unless the caller says its memory is not resident
    /// (`released`: vmalloc's frames, whose direct-map memory was discarded)
    /// and every buddy it merges with is released too.
    @discardableResult
    mutating func put(_ pfn: Int, order: Int, tick: UInt32, released: Bool = false) -> (pfn: Int, order: Int) {
        var pfn = pfn, order = order, released = released
        while order < maxOrder {
            let buddy = pfn ^ (1 << order)
            let b = frames[buddy]
            guard b.state == PageState.free.rawValue, Int(b.order) == order else { break }
            if b.flags & PageFrame.flagReleased == 0 { released = false }
            unlink(buddy, order: order)
            // The higher of the two becomes a tail: clear its descriptor
            // entirely, so every tail of a free block is all zeros (and its
            // metadata page may be dropped when the block is released).
            frames[max(pfn, buddy)] = PageFrame()
            pfn = min(pfn, buddy)
            order += 1
        }
        // Keeps the double-free evidence.
        frames[pfn].flags = frames[pfn].flags & PageFrame.flagEverAllocated | (released ? PageFrame.flagReleased : 0)
        frames[pfn].freedTick = tick
        frames[pfn].owner = 0
        frames[pfn].group = 0
        link(pfn, order: order)
        return (pfn, order)
    }

    /// Free blocks of at least `minOrder` that still hold memory and have
    /// been free for at least `minimumAge` ticks, largest first.
    func releaseCandidates(minOrder: Int, minimumAge: UInt32, now: UInt32, limit: Int) -> [(pfn: Int, order: Int)] {
        var result: [(pfn: Int, order: Int)] = []
        for order in stride(from: maxOrder, through: minOrder, by: -1) {
            var p = heads[order]
            while p != PageFrame.none, result.count < limit {
                let f = frames[Int(p)]
                if f.flags & PageFrame.flagReleased != 0 { break }  // released blocks sit at the tail
                if now &- f.freedTick >= minimumAge { result.append((Int(p), order)) }
                p = f.next
            }
        }
        return result
    }

    /// Marks a free block as released (its memory went back to the OS with `MADV_DONTNEED`).
    mutating func markReleased(_ pfn: Int, order: Int) {
        precondition(frames[pfn].state == PageState.free.rawValue && Int(frames[pfn].order) == order)
        unlink(pfn, order: order)
        frames[pfn].flags |= PageFrame.flagReleased
        link(pfn, order: order)
    }
}

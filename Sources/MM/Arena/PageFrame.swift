// SPDX-License-Identifier: Apache-2.0

/// Size of a page in the arena. Kernel analogue: `PAGE_SIZE` on x86-64.
@usableFromInline let pageSize = 4096
/// `log2(pageSize)`. Kernel analogue: `PAGE_SHIFT`.
@usableFromInline let pageShift = 12

/// Highest buddy order: blocks of 2^10 pages = 4 MiB. Kernel analogue: `MAX_PAGE_ORDER`.
@usableFromInline let maxOrder = 10

/// Orders above this are "costly": guaranteed requests may not ask for them.
/// Kernel analogue: `PAGE_ALLOC_COSTLY_ORDER`.
@usableFromInline let costlyOrder = 3

/// Largest physically contiguous block: one order-10 block.
@usableFromInline let maxContiguousBytes = pageSize << maxOrder

/// What a page-frame descriptor says about its page.
///
/// Only the first page of a block (its *head*) carries a state other than
/// `.tail`; every other page of a block is a zeroed `.tail` descriptor. That
/// invariant lets the allocator split and merge in O(1) descriptor writes and
/// lets `_checkInvariants()` walk the arena block by block.
@usableFromInline
enum PageState: UInt8 {
    /// Inside a block (free or allocated) whose head is elsewhere.
    case tail = 0
    /// Head of a free block on a buddy free list.
    case free = 1
    /// Head of an allocated block.
    case allocated = 2
    /// Head of a free block sitting in some thread's per-thread page list.
    case cached = 3
}

/// Page-frame metadata: one 32-byte descriptor per 4 KiB page, kept in its
/// own mapping so that no metadata ever sits next to user data.
/// Kernel analogue: `struct page` in the `mem_map` array.
@usableFromInline
struct PageFrame {
    @usableFromInline var state: UInt8
    @usableFromInline var order: UInt8
    @usableFromInline var flags: UInt16
    /// Buddy free list links (page frame numbers; `PageFrame.none` ends a list).
    @usableFromInline var next: UInt32
    @usableFromInline var prev: UInt32
    /// When the block became free, in release ticks (see `PageAllocator+Release.swift`).
    /// On a slab's head page, read as `slabFreeCount` instead (an allocated
    /// page has no free age; the kernel's `struct page` shares fields the same way).
    @usableFromInline var freedTick: UInt32
    /// The object cache whose slab starts here, plus one (0: not a slab page).
    @usableFromInline var owner: UInt32
    /// The group charged for this allocated block (0: none).
    @usableFromInline var group: UInt32
    /// On a slab's head page: the address of the first object on the slab's
    /// free list (0: none). Kernel analogue: `slab->freelist`.
    @usableFromInline var slabFreeList: UInt64

    @usableFromInline static let none: UInt32 = .max

    /// The block's memory has been returned to the OS and reads as zeros.
    @usableFromInline static let flagReleased: UInt16 = 1 << 0
    /// This head page was handed out at least once (tells a double free from
    /// a pointer that was never allocated).
    @usableFromInline static let flagEverAllocated: UInt16 = 1 << 1
}

extension PageFrame {
    /// An all-zero descriptor: the state of every tail page.
    init() {
        self.init(state: 0, order: 0, flags: 0, next: 0, prev: 0, freedTick: 0, owner: 0, group: 0, slabFreeList: 0)
    }

}

extension PageFrame {
    /// On a slab's head page: the objects on the slab's free list. Stored in
    /// `freedTick`, which only free blocks use. Kernel analogue: `slab->inuse`
    /// (counted the other way).
    @inlinable var slabFreeCount: UInt32 {
        get { freedTick }
        set { freedTick = newValue }
    }
}

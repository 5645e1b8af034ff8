// SPDX-License-Identifier: Apache-2.0

/// Where an object cache's objects sit in a slab and how free ones are
/// marked: written once when the cache is created, then read without locks
/// by the fast paths of every thread.
///
/// A slab is one buddy block of `2^slabOrder` pages, aligned to its size,
/// holding `objectsPerSlab` slots of `stride` bytes from its start. A free
/// object carries a *free canary* (`secret ^ address`) in the word at
/// `canaryOffset`; an object never handed out carries the *fresh canary*
/// (`free canary ^ 1`). Free objects in a slab's free list also hold the
/// encoded address of the next one in their first word. Slots are at least
/// two words apart (an 8-byte object takes 16 bytes, like glibc's smallest
/// chunk), so the canary always has a word of its own at offset 8 — a
/// constant the fast paths use — except in red-zoned 8-byte caches, which
/// only the checked path serves.
/// Kernel analogue: the geometry fields of `struct kmem_cache`
/// (`size`, `object_size`, `oo`, `random` of `CONFIG_SLAB_FREELIST_HARDENED`).
@usableFromInline
struct ObjectLayout {
    /// Bytes usable in an object.
    @usableFromInline var size: Int
    /// Distance between two slots: size, red zone and alignment padding.
    @usableFromInline var stride: Int
    /// `slabBytes - 1`: the offset of an address inside its slab is `offset & slabMask`.
    @usableFromInline var slabMask: UInt
    /// `ceil(2^64 / stride)` and a bound: an offset `n` in the slab (below
    /// 2^32) is the start of one of its slots exactly when
    /// `n &* slotMultiplier < slotBound` — one multiplication and one
    /// comparison, no division (`isSlotStart`).
    @usableFromInline var slotMultiplier: UInt
    @usableFromInline var slotBound: UInt
    @usableFromInline var objectsPerSlab: Int
    /// Byte offset of the canary word: `fastCanaryOffset` in every cache the
    /// fast path serves; 0 in red-zoned 8-byte caches (link and canary share a word).
    @usableFromInline var canaryOffset: Int
    /// Where the fast paths find the canary (the second word of every slot).
    @usableFromInline static let fastCanaryOffset = 8
    /// Per-cache random secret for canaries and free-list links.
    @usableFromInline var secret: UInt
    /// Nonzero when every allocation and free must take the checked path
    /// (debug flags, or the cache was destroyed).
    @usableFromInline var checkedOnly: UInt32
    @usableFromInline var slabOrder: Int
    @usableFromInline var alignment: Int
    /// An accounted cache (`kmalloc-cg-*`, `<name>-cg`): its objects are
    /// charged to groups, so their frees leave the inlined free fast path
    /// (a thread's magazine of it has a zero slot bound, which refuses every
    /// pointer) for the charged free path, which uncharges them
    /// (`SlabAllocator.freeSlow`). Allocations pop its magazines as usual.
    var isAccounted = false

    /// Bytes between the end of an object and its stride, when red zones are on.
    static let redZoneBytes = 16
    static let redZoneByte: UInt8 = 0xBB
    static let poisonByte: UInt8 = 0x6B

    /// The slot test of `slots` slots of `stride` bytes from a slab's start.
    ///
    /// With `c = ceil(2^64 / stride)` and `e = stride * c - 2^64` (`0 ≤ e <
    /// stride`), an offset `n = q * stride + r` below 2^32 gives `n * c mod
    /// 2^64 = q * e` when `r = 0`, and a value of at least `c` otherwise (the
    /// divisibility test of Lemire, Kaser and Kurz, "Faster remainder by
    /// direct computation", 2019). Comparing with `slots * e` instead of `c`
    /// also rejects the multiples past the last slot (the start of the
    /// incomplete slot in the slab's tail), as `slots * e < 2^27 < c`. When the
    /// stride is a power of two (`e = 0`) the slots fill the slab, and the
    /// bound is `c`: every multiple inside the slab is a slot.
    static func slotTest(stride: Int, slots: Int) -> (multiplier: UInt, bound: UInt) {
        let c = UInt.max / UInt(stride) &+ 1
        let e = UInt(stride) &* c
        return (c, e == 0 ? c : UInt(slots) * e)
    }

    /// Whether `offsetInSlab` (below 2^32) is the start of a slot (`slotTest`).
    @inlinable @inline(__always)
    static func isSlotStart(_ offsetInSlab: UInt, multiplier: UInt, bound: UInt) -> Bool {
        offsetInSlab &* multiplier < bound
    }

    /// The slot number of the object at `offset` in the direct map, in its
    /// slab: the high word of its offset in the slab times `ceil(2^64 /
    /// stride)` (exact for slot starts, see `slotTest`).
    @inline(__always)
    func slot(atOffset offset: UInt) -> Int {
        Int(truncatingIfNeeded: (offset & slabMask).multipliedFullWidth(by: slotMultiplier).high)
    }

    /// The page number of the head of the slab holding `offset` (slabs are aligned to their size).
    @inline(__always)
    func slabHeadPage(atOffset offset: UInt) -> Int {
        Int(truncatingIfNeeded: (offset >> UInt(pageShift)) & ~((1 << UInt(slabOrder)) - 1))
    }

    /// The free canary of the slot at `address`.
    @inlinable @inline(__always)
    func freeCanary(_ address: UInt) -> UInt { secret ^ address }

    /// The encoded form of a free-list link stored in the object at `address`.
    /// Kernel analogue: `freelist_ptr_encode` (`ptr ^ s->random ^ swab(ptr_addr)`).
    @inline(__always)
    func encode(next: UInt, at address: UInt) -> UInt { next ^ secret ^ address.byteSwapped }

    @inline(__always)
    func decode(_ stored: UInt, at address: UInt) -> UInt { stored ^ secret ^ address.byteSwapped }

    /// Geometry for objects of `size` bytes aligned to `alignment` (a power
    /// of two ≥ 8), with an optional red zone after each object.
    /// The slab order is the smallest (≤ `costlyOrder`) that wastes at most
    /// an eighth of the slab, else the least wasteful one: small orders keep
    /// slabs easy to find under fragmentation (a 4 KiB object needs one free
    /// page, not eight). `nil` when even an order-3 slab cannot hold one.
    init?(size: Int, alignment: Int, redZone: Bool, secret: UInt) {
        let raw = redZone ? max(8, size) + ObjectLayout.redZoneBytes : max(16, size)
        let stride = (raw + alignment - 1) & ~(alignment - 1)
        func waste(_ o: Int) -> Int {
            let slab = pageSize << o
            return slab / stride == 0 ? slab : slab % stride
        }
        let order = (0...costlyOrder).first { waste($0) * 8 <= pageSize << $0 && (pageSize << $0) >= stride }
            ?? (0...costlyOrder).min { waste($0) * (pageSize << $1) < waste($1) * (pageSize << $0) }!
        let perSlab = (pageSize << order) / stride
        guard perSlab >= 1 else { return nil }
        self.size = max(8, size)
        self.stride = stride
        self.slabOrder = order
        self.slabMask = UInt(pageSize << order) - 1
        (self.slotMultiplier, self.slotBound) = ObjectLayout.slotTest(stride: stride, slots: perSlab)
        self.objectsPerSlab = perSlab
        self.canaryOffset = stride >= 16 && (!redZone || size >= 16) ? ObjectLayout.fastCanaryOffset : 0
        self.secret = secret
        self.checkedOnly = 0
        self.alignment = alignment
    }
}

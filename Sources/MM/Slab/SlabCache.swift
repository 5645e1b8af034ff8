// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A doubly linked list of slabs threaded through their head page's
/// descriptor (`next`/`prev`), like the kernel's `slab->slab_list`.
struct SlabList: Sendable {
    var head: UInt32 = PageFrame.none
    var count = 0
}

/// Counters of one cache, changed under its lock.
struct SlabCounters: Sendable {
    var slabsCreated = 0, slabsFreed = 0
    var refills = 0, drains = 0
    var checkedAllocations = 0, checkedFrees = 0
}

/// The lock-protected state of one cache: its slabs and its depot.
struct SlabCacheState: Sendable {
    /// Slabs with some free and some used objects, then slabs with every object free.
    var partial = SlabList(), empty = SlabList()
    /// Head pfns of every slab of the cache (full ones included).
    var slabs: Set<UInt32> = []
    /// Free objects returned by threads' magazines, most recent last: the
    /// next refill takes these before touching slab free lists.
    /// Kernel analogue: the barn of SLUB sheaves; Bonwick's depot.
    var depot: [UInt] = []
    /// Objects on slab free lists.
    var freeInSlabs = 0
    var counters = SlabCounters()
    var destroyed = false
}

/// One object cache's shared part: slabs taken from the page allocator,
/// carved into objects, and the depot between them and threads' magazines.
/// Kernel analogue: `struct kmem_cache` with its `kmem_cache_node` lists.
///
/// Lock order: a cache's lock may be held while taking the zone lock (to
/// free slab pages), never the other way round; no cache lock is ever held
/// while allocating pages (that may reclaim, and reclaim takes cache locks).
final class SlabCache: @unchecked Sendable {  // immutable after init except `central` (locked)
    let name: String
    let index: Int
    let layout: ObjectLayout
    let flags: ObjectCacheFlags
    /// Objects a thread's magazine holds at most; refills and drains move half.
    let magazineLimit: Int
    /// Objects the depot holds before older ones go back to their slabs.
    let depotLimit: Int
    /// Completely free slabs kept for reuse (kernel `min_partial`); the rest are freed.
    let keptEmptySlabs = 1
    let central: Locked<SlabCacheState>
    let frames: UnsafeMutablePointer<PageFrame>
    let directMap: UInt
    let slabPages: Int
    /// Accounted caches only: the system's table of per-slab group vectors
    /// (by slab head page), each holding the group every slot of its slab is
    /// charged to (0: none). A slot's entry is written by the thread that
    /// allocates the object and read by the thread that frees it, so it needs
    /// no lock; a vector lives from `carve` to `uncarve`.
    /// Kernel analogue: the slab's `obj_exts` vector of `obj_cgroup` pointers.
    let objectGroups: UnsafeMutablePointer<UnsafeMutablePointer<UInt32>?>?

    static let flagOnPartial: UInt16 = 1 << 4
    static let flagOnEmpty: UInt16 = 1 << 5

    init(name: String, index: Int, layout: ObjectLayout, flags: ObjectCacheFlags, arena: Arena,
         objectGroups: UnsafeMutablePointer<UnsafeMutablePointer<UInt32>?>? = nil) {
        self.name = name
        self.index = index
        self.layout = layout
        self.flags = flags
        // Small objects: up to 64 KiB of them per thread (at most 1024, at least 256), so that a
        // thread that allocates a thousand small objects and then frees them all (a request's
        // parse tree, a batch) cycles through its magazine without touching the depot.
        let limit = layout.size <= 256 ? min(1024, max(256, (64 << 10) / max(8, layout.size)))
            : layout.size <= 1024 ? 128 : layout.size <= 4096 ? 32 : 16
        magazineLimit = limit
        depotLimit = 8 * limit
        central = Locked(SlabCacheState())
        frames = arena.frames
        directMap = UInt(bitPattern: arena.directMap)
        slabPages = 1 << layout.slabOrder
        self.objectGroups = objectGroups
    }

    // MARK: Charged objects (accounted caches)

    /// The slot number of the object at `address` in its slab.
    @inline(__always) func slot(of address: UInt) -> Int { layout.slot(atOffset: address &- directMap) }

    /// The group-vector entry of the object at `address` (accounted caches).
    @inline(__always) func groupEntry(of address: UInt) -> UnsafeMutablePointer<UInt32> {
        objectGroups.unsafelyUnwrapped[Int(slabHead(of: address))].unsafelyUnwrapped + slot(of: address)
    }

    /// Records the group an object just allocated from this accounted cache
    /// is charged to (0: none), replacing whatever its slot held before.
    @inline(__always) func recordGroup(_ groupID: UInt32, of address: UInt) {
        groupEntry(of: address).pointee = groupID
    }

    /// The group an object of this accounted cache is charged to, forgotten
    /// (its slot reads 0 afterwards): the free that uncharges it reads it
    /// before the object can be allocated again.
    @inline(__always) func takeGroup(of address: UInt) -> UInt32 {
        let entry = groupEntry(of: address)
        defer { entry.pointee = 0 }
        return entry.pointee
    }

    var batch: Int { magazineLimit / 2 }

    // MARK: Slab lists

    @inline(__always) private func frame(_ pfn: UInt32) -> UnsafeMutablePointer<PageFrame> { frames + Int(pfn) }

    /// Objects on the slab's free list (kept in the head's `freedTick`).
    @inline(__always) func freeCount(_ pfn: UInt32) -> Int { Int(frame(pfn).pointee.slabFreeCount) }

    private func push(_ pfn: UInt32, _ list: inout SlabList, flag: UInt16) {
        let f = frame(pfn)
        f.pointee.prev = PageFrame.none
        f.pointee.next = list.head
        if list.head != PageFrame.none { frame(list.head).pointee.prev = pfn }
        list.head = pfn
        list.count += 1
        f.pointee.flags |= flag
    }

    private func remove(_ pfn: UInt32, _ list: inout SlabList, flag: UInt16) {
        let f = frame(pfn)
        if f.pointee.prev != PageFrame.none { frame(f.pointee.prev).pointee.next = f.pointee.next } else { list.head = f.pointee.next }
        if f.pointee.next != PageFrame.none { frame(f.pointee.next).pointee.prev = f.pointee.prev }
        list.count -= 1
        f.pointee.flags &= ~flag
    }

    /// Puts a slab on the list its free count calls for: none when full,
    /// `empty` when every object is free, `partial` otherwise.
    private func relist(_ pfn: UInt32, _ s: inout SlabCacheState) {
        let flags = frame(pfn).pointee.flags
        if flags & SlabCache.flagOnPartial != 0 { remove(pfn, &s.partial, flag: SlabCache.flagOnPartial) }
        if flags & SlabCache.flagOnEmpty != 0 { remove(pfn, &s.empty, flag: SlabCache.flagOnEmpty) }
        let free = freeCount(pfn)
        if free == layout.objectsPerSlab { push(pfn, &s.empty, flag: SlabCache.flagOnEmpty) }
        else if free > 0 { push(pfn, &s.partial, flag: SlabCache.flagOnPartial) }
    }

    /// Head pfn of the slab holding the object at `address`.
    @inline(__always) func slabHead(of address: UInt) -> UInt32 {
        UInt32(truncatingIfNeeded: ((address &- directMap) >> UInt(pageShift)) & ~UInt(slabPages - 1))
    }

    @inline(__always) func slabBase(_ pfn: UInt32) -> UInt { directMap + (UInt(pfn) << UInt(pageShift)) }

    /// Whether `address` is the start of a slot of the slab at `pfn`.
    func isSlot(_ address: UInt, inSlab pfn: UInt32) -> Bool {
        let offset = address &- slabBase(pfn)
        guard offset <= layout.slabMask else { return false }
        return Int(offset) % layout.stride == 0 && Int(offset) / layout.stride < layout.objectsPerSlab
    }

    // MARK: Objects in and out of slabs (lock held)

    /// Moves up to `max` objects from slab free lists to `out`, partial
    /// slabs first. Returns how many; each one is marked free (canary).
    func takeFromSlabs(_ s: inout SlabCacheState, into out: UnsafeMutablePointer<UnsafeMutableRawPointer>, max: Int,
                       corruption: inout [HardeningViolation]) -> Int {
        var n = 0
        while n < max {
            let pfn = s.partial.head != PageFrame.none ? s.partial.head : s.empty.head
            guard pfn != PageFrame.none else { break }
            let f = frame(pfn)
            while n < max && f.pointee.slabFreeCount > 0 {
                let object = UInt(f.pointee.slabFreeList)
                let next = layout.decode(UnsafeRawPointer(bitPattern: object)!.load(as: UInt.self), at: object)
                if next != 0 && !isSlot(next, inSlab: pfn) {
                    corruption.append(HardeningViolation(
                        kind: .freeListCorrupted, operation: "allocate from \(name)", pointer: object,
                        detail: "the free-list link in this free object decodes to 0x\(String(next, radix: 16)), not a slot of its slab (page \(pfn)): it was written after it was freed; the slab's \(f.pointee.slabFreeCount) remaining free objects are abandoned"))
                    s.freeInSlabs -= Int(f.pointee.slabFreeCount)
                    f.pointee.slabFreeCount = 0
                    f.pointee.slabFreeList = 0
                    break
                }
                f.pointee.slabFreeList = UInt64(next)
                f.pointee.slabFreeCount -= 1
                s.freeInSlabs -= 1
                let p = UnsafeMutableRawPointer(bitPattern: object)!
                if layout.canaryOffset == 0 { p.storeBytes(of: layout.freeCanary(object), as: UInt.self) }
                out[n] = p
                n += 1
            }
            relist(pfn, &s)
        }
        return n
    }

    /// Puts a free (canaried) object back on its slab's free list.
    func returnToSlab(_ object: UInt, _ s: inout SlabCacheState) {
        let pfn = slabHead(of: object)
        let f = frame(pfn)
        UnsafeMutableRawPointer(bitPattern: object)!.storeBytes(of: layout.encode(next: UInt(f.pointee.slabFreeList), at: object),
                                                               as: UInt.self)
        f.pointee.slabFreeList = UInt64(object)
        f.pointee.slabFreeCount += 1
        s.freeInSlabs += 1
        relist(pfn, &s)
    }

    /// Detaches completely free slabs beyond `keep`; returns their head pfns
    /// for the caller to free after unlocking.
    func detachEmptySlabs(_ s: inout SlabCacheState, keep: Int) -> [UInt32] {
        var out: [UInt32] = []
        while s.empty.count > keep {
            let pfn = s.empty.head
            remove(pfn, &s.empty, flag: SlabCache.flagOnEmpty)
            s.slabs.remove(pfn)
            s.freeInSlabs -= layout.objectsPerSlab
            s.counters.slabsFreed += 1
            out.append(pfn)
        }
        return out
    }

    /// Returns the oldest depot objects beyond `keep` to their slabs.
    func trimDepot(_ s: inout SlabCacheState, keep: Int) {
        let excess = s.depot.count - keep
        guard excess > 0 else { return }
        for i in 0..<excess { returnToSlab(s.depot[i], &s) }
        s.depot.removeFirst(excess)
    }

    // MARK: New slabs

    /// Turns a freshly allocated block into a slab: every page names this
    /// cache, every slot is on the free list with the fresh canary (and red
    /// zone and poison, when enabled). Runs without the lock: the block is
    /// not reachable yet.
    func carve(_ pfn: UInt32) {
        for i in 0..<slabPages { frame(pfn + UInt32(i)).pointee.owner = UInt32(index + 1) }
        let base = slabBase(pfn)
        var next: UInt = 0
        for k in stride(from: layout.objectsPerSlab - 1, through: 0, by: -1) {
            let address = base + UInt(k * layout.stride)
            let p = UnsafeMutableRawPointer(bitPattern: address)!
            if flags.contains(.poison) {
                p.initializeMemory(as: UInt8.self, repeating: ObjectLayout.poisonByte, count: layout.size)
            }
            if flags.contains(.redZone) {
                (p + layout.size).initializeMemory(as: UInt8.self, repeating: ObjectLayout.redZoneByte,
                                                   count: layout.stride - layout.size)
            }
            p.storeBytes(of: layout.encode(next: next, at: address), as: UInt.self)
            if layout.canaryOffset != 0 { (p + layout.canaryOffset).storeBytes(of: layout.freeCanary(address) ^ 1, as: UInt.self) }
            next = address
        }
        let head = frame(pfn)
        head.pointee.slabFreeList = UInt64(next)
        head.pointee.slabFreeCount = UInt32(layout.objectsPerSlab)
        head.pointee.flags &= ~(SlabCache.flagOnEmpty | SlabCache.flagOnPartial)
        if let objectGroups {
            let vector = UnsafeMutablePointer<UInt32>.allocate(capacity: layout.objectsPerSlab)
            vector.initialize(repeating: 0, count: layout.objectsPerSlab)
            objectGroups[Int(pfn)] = vector
        }
    }

    /// Adds a carved slab to the cache (lock held).
    func add(_ pfn: UInt32, _ s: inout SlabCacheState) {
        s.slabs.insert(pfn)
        s.freeInSlabs += layout.objectsPerSlab
        s.counters.slabsCreated += 1
        relist(pfn, &s)
    }

    /// Makes a detached slab's pages ordinary pages again (before they are
    /// freed to the page allocator).
    func uncarve(_ pfn: UInt32) {
        for i in 0..<slabPages { frame(pfn + UInt32(i)).pointee.owner = 0 }
        let head = frame(pfn)
        head.pointee.slabFreeList = 0
        head.pointee.slabFreeCount = 0
        head.pointee.flags &= ~(SlabCache.flagOnEmpty | SlabCache.flagOnPartial)
        if let objectGroups {
            objectGroups[Int(pfn)]?.deallocate()
            objectGroups[Int(pfn)] = nil
        }
    }

    // MARK: Statistics

    /// Objects in slabs, and those not on a slab free list or in the depot.
    func counts() -> (total: Int, notFreeInCentral: Int, slabs: Int, counters: SlabCounters) {
        central.withLock { s in
            let total = s.slabs.count * layout.objectsPerSlab
            return (total, total - s.freeInSlabs - s.depot.count, s.slabs.count, s.counters)
        }
    }
}

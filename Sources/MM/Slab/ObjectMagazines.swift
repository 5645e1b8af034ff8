// SPDX-License-Identifier: Apache-2.0
public import CMMShims
import Synchronization

/// Most object caches a system can create in its lifetime, kmalloc classes included.
@usableFromInline let maxObjectCaches = 1024

/// A thread's stack of free objects of one object cache: the allocate/free
/// pair of the fast path pops and pushes here with plain loads and stores —
/// no lock, no atomic read-modify-write.
/// Kernel analogue: `struct kmem_cache_cpu` / the per-CPU sheaves of SLUB,
/// per thread here; Bonwick's magazines.
///
/// The stack is a cursor between two bounds: a pop compares the cursor with
/// `base`, a push with `end`, and each moves it by one entry — no count to
/// keep beside it. A record is zero-filled until the thread's first refill
/// of the cache, and zero bounds refuse both. 64 bytes, one cache line: a
/// free finds everything it checks here.
@usableFromInline
struct Magazine: ~Copyable {
    /// The address after the top entry: `base` when the stack is empty. A
    /// relaxed atomic (plain loads and stores): statistics read it from other threads.
    @usableFromInline let cursor: Atomic<UInt>
    /// The stack's first entry (0 until the thread's first refill of the
    /// cache). The owner thread's; other threads read `sharedBase`.
    @usableFromInline var base: UInt
    /// `base` plus the stack's limit, in entries: a push with the cursor
    /// there is refused. `base` when the limit is 0 (every free then takes
    /// the slow path).
    @usableFromInline var end: UInt
    /// A copy of `base` that other threads may read (a relaxed atomic):
    /// statistics, and a cache's destruction.
    @usableFromInline let sharedBase: Atomic<UInt>
    /// The cache's `ObjectLayout.slabMask`, slot test and `secret`, copied
    /// when the stack is made (a cache's layout never changes): a free
    /// checks the pointer with the magazine's own cache line, without a
    /// lookup in the layout table. All zero while there is no stack, which
    /// fails the slot test.
    @usableFromInline var slabMask: UInt
    @usableFromInline var slotMultiplier: UInt
    @usableFromInline var slotBound: UInt
    @usableFromInline var secret: UInt

    /// The byte offset of `slotBound` (after six words).
    static var slotBoundOffset: Int { 6 * MemoryLayout<UInt>.stride }
}

/// A thread's magazines: one per cache index of one system. The mapping
/// is lazy, so records of caches the thread never used cost no memory; a
/// stack is allocated on the thread's first refill of that cache.
@usableFromInline
typealias MagazineRecord = InlineArray<1024, Magazine>


/// The magazine kind of per-thread cache.
@usableFromInline
enum MagazinesKind: PerThreadCacheKind {
    @usableFromInline static var recordByteCount: Int { MemoryLayout<MagazineRecord>.size }

    @inlinable @inline(__always)
    static var threadSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?> { cmm_object_caches_slot() }

    @inlinable @inline(__always)
    static var fastPathSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?> { cmm_object_caches_fast_slot() }

    /// The C shim's read-only zero record (`cmm_empty_object_caches`).
    @inlinable @inline(__always)
    static var emptyRecord: UnsafeMutableRawPointer? { cmm_empty_object_caches_record() }

    @usableFromInline
    static func initializeRecord(at record: UnsafeMutableRawPointer) {
        // Zero-filled memory is a valid record: no stacks, bounds or limits.
        record.bindMemory(to: Magazine.self, capacity: maxObjectCaches)
    }

    /// Returns the objects to their system at thread exit.
    @usableFromInline static let threadExitKey = ThreadExitKey { raw in
        guard let raw else { return }
        SlabAllocator.magazines.threadExited(raw)
    }
}

/// A thread's magazines.
@usableFromInline
typealias ObjectMagazines = PerThreadCache<MagazinesKind>

extension PerThreadCache where Kind == MagazinesKind {
    /// The calling thread's magazines, or the empty record: never nil, so
    /// the free fast path needs no null test (the empty record's fast-path
    /// key matches no system).
    @inlinable @inline(__always)
    static var currentOrEmpty: ObjectMagazines {
        ObjectMagazines(header: Kind.threadSlot.pointee.unsafelyUnwrapped.assumingMemoryBound(to: PerThreadCacheHeader.self))
    }

    /// `currentOrEmpty` as the process allocator's `malloc` and `free` may
    /// use it: the empty record also while the thread is inside that
    /// allocator or holds an allocator lock, or when malloc magazines are off.
    @inlinable @inline(__always)
    static var currentOrEmptyForMalloc: ObjectMagazines {
        ObjectMagazines(header: cmm_object_caches_malloc_slot().pointee.unsafelyUnwrapped
            .assumingMemoryBound(to: PerThreadCacheHeader.self))
    }

    /// `currentOrEmpty` as the allocation fast path may use it: the empty
    /// record while the thread holds a `ReclaimCheckedMutex`.
    @inlinable @inline(__always)
    static var currentOrEmptyForFastPath: ObjectMagazines {
        ObjectMagazines(header: Kind.fastPathSlot.pointee.unsafelyUnwrapped.assumingMemoryBound(to: PerThreadCacheHeader.self))
    }

    /// The magazine of the cache at `index`.
    @inlinable @inline(__always)
    func magazine(_ index: Int) -> UnsafeMutablePointer<Magazine> {
        assert(index >= 0 && index < maxObjectCaches, "swift-mm internal: cache index \(index) out of range")
        return recordBase.assumingMemoryBound(to: Magazine.self) + index
    }

    /// The magazine of the cache whose slab pages have owner `owner`
    /// (index + 1): the record starts one magazine after the header, so
    /// that is `header + owner * 64` — one shift, no decrement.
    @inlinable @inline(__always)
    func magazine(owner: UInt32) -> UnsafeMutablePointer<Magazine> {
        assert(MemoryLayout<Magazine>.stride == Self.recordOffset, "swift-mm internal: a magazine is not 64 bytes")
        return (UnsafeMutableRawPointer(header) + Int(truncatingIfNeeded: owner) &* Self.recordOffset)
            .assumingMemoryBound(to: Magazine.self)
    }

    /// Objects in the magazine of the cache at `index`. Exact on the owner
    /// thread; from another thread a snapshot, 0 while the stack is being made or freed.
    func count(_ index: Int) -> Int {
        let m = magazine(index)
        let base = m.pointee.sharedBase.load(ordering: .relaxed)
        let cursor = m.pointee.cursor.load(ordering: .relaxed)
        guard base != 0, cursor >= base else { return 0 }
        return Int((cursor &- base) / UInt(MemoryLayout<UnsafeMutableRawPointer>.stride))
    }

    /// Pops an object from the magazine at `index`, or nil when it is empty.
    @inlinable @inline(__always)
    func pop(_ index: Int) -> UnsafeMutableRawPointer? {
        let m = magazine(owner: UInt32(truncatingIfNeeded: index &+ 1))
        let cursor = m.pointee.cursor.load(ordering: .relaxed)
        guard cursor > m.pointee.base else { return nil }
        let top = cursor &- UInt(MemoryLayout<UnsafeMutableRawPointer>.stride)
        m.pointee.cursor.store(top, ordering: .relaxed)
        return UnsafeRawPointer(bitPattern: top).unsafelyUnwrapped.load(as: UnsafeMutableRawPointer.self)
    }

    /// Pushes a freed object onto the magazine at `index` if it has room.
    @inlinable @inline(__always)
    func push(_ p: UnsafeMutableRawPointer, _ index: Int) -> Bool {
        push(p, onto: magazine(index))
    }

    /// Pushes a freed object onto magazine `m` (one of this record's) if it has room.
    @inlinable @inline(__always)
    func push(_ p: UnsafeMutableRawPointer, onto m: UnsafeMutablePointer<Magazine>) -> Bool {
        let cursor = m.pointee.cursor.load(ordering: .relaxed)
        guard cursor < m.pointee.end else { return false }
        UnsafeMutableRawPointer(bitPattern: cursor).unsafelyUnwrapped.storeBytes(of: p, as: UnsafeMutableRawPointer.self)
        m.pointee.cursor.store(cursor &+ UInt(MemoryLayout<UnsafeMutableRawPointer>.stride), ordering: .relaxed)
        return true
    }

    /// The stack of the magazine at `index` (slow paths move runs of it).
    func stack(_ index: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer> {
        UnsafeMutablePointer(bitPattern: magazine(index).pointee.sharedBase.load(ordering: .relaxed))!
    }

    /// Sets the count at `index` (slow paths; `0...limit`).
    func setCount(_ index: Int, _ n: Int) {
        let m = magazine(index)
        let base = m.pointee.sharedBase.load(ordering: .relaxed)
        precondition(n >= 0 && n <= limit(index), "swift-mm internal: magazine count \(n) outside 0...\(limit(index))")
        m.pointee.cursor.store(base &+ UInt(n &* MemoryLayout<UnsafeMutableRawPointer>.stride), ordering: .relaxed)
    }

    /// Objects the stack at `index` holds at most; 0 sends every free to the slow path.
    func limit(_ index: Int) -> Int {
        let m = magazine(index)
        return Int((m.pointee.end &- m.pointee.base) / UInt(MemoryLayout<UnsafeMutableRawPointer>.stride))
    }

    /// Whether the cache at `index` has a stack yet.
    func hasStack(_ index: Int) -> Bool { magazine(index).pointee.sharedBase.load(ordering: .relaxed) != 0 }

    /// Gives the cache at `index`, laid out as `layout`, a stack of `limit`
    /// entries (owner thread, once per cache while attached to its system).
    func makeStack(_ index: Int, limit: Int, layout: ObjectLayout) {
        let storage = UInt(bitPattern: UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: max(1, limit)))
        let m = magazine(index)
        m.pointee.cursor.store(storage, ordering: .relaxed)  // before the base: a reader sees 0 or an empty stack
        m.pointee.sharedBase.store(storage, ordering: .relaxed)
        m.pointee.base = storage
        m.pointee.end = storage &+ UInt(limit &* MemoryLayout<UnsafeMutableRawPointer>.stride)
        m.pointee.slabMask = layout.slabMask
        m.pointee.slotMultiplier = layout.slotMultiplier
        m.pointee.slotBound = layout.isAccounted ? 0 : layout.slotBound  // see `ObjectLayout.isAccounted`
        m.pointee.secret = layout.secret
    }

    /// Leaves the stack of the cache at `index` no room (its count must be
    /// 0), so that every free of its objects takes the slow path (the cache
    /// became checked-only).
    func closeStack(_ index: Int) {
        let m = magazine(index)
        m.pointee.end = m.pointee.sharedBase.load(ordering: .relaxed)
    }

    /// Frees the stack of the cache at `index` (its objects must have been
    /// returned, or be forgotten) and forgets it.
    func freeStack(_ index: Int) {
        let m = magazine(index)
        let base = m.pointee.sharedBase.load(ordering: .relaxed)
        guard base != 0 else { return }
        m.pointee.sharedBase.store(0, ordering: .relaxed)  // before the cursor: a reader sees 0
        m.pointee.cursor.store(0, ordering: .relaxed)
        m.pointee.base = 0
        m.pointee.end = 0
        m.pointee.slabMask = 0
        m.pointee.slotMultiplier = 0
        m.pointee.slotBound = 0
        m.pointee.secret = 0
        UnsafeMutablePointer<UnsafeMutableRawPointer>(bitPattern: base)!.deallocate()
    }

    /// Indices whose stacks exist (walks the records; slow).
    func usedIndices(below bound: Int) -> [Int] {
        (0..<min(bound, maxObjectCaches)).filter { hasStack($0) }
    }
}

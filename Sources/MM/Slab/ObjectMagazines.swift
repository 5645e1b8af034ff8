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
/// `top` is a copy of the top entry: it keeps a pop off the count's
/// dependency chain (the object comes from one load, not from a load of the
/// count and then of the stack; an allocate+free pair went from 25 to ~15
/// cycles of latency). Every stack has one spare entry below its base, so
/// that a pop of the last object may read the entry under it.
@usableFromInline
struct Magazine: ~Copyable {
    /// The stack's base (nil until the thread's first refill of the cache).
    @usableFromInline var stack: UnsafeMutablePointer<UnsafeMutableRawPointer>?
    /// Objects on the stack (a relaxed atomic: statistics read it from other threads).
    @usableFromInline let count: Atomic<Int>
    /// Objects the stack holds at most; 0 sends every free to the slow path.
    @usableFromInline var limit: Int
    /// The object on top of the stack. Read only while the count is
    /// positive (a record is zero-filled until the thread's first refill of
    /// the cache); not optional, so a pop needs no nil test.
    @usableFromInline var top: UnsafeMutableRawPointer
    /// The cache's `ObjectLayout.slabMask`, slot test and `secret`, copied
    /// when the stack is made (a cache's layout never changes): a free
    /// checks the pointer with the magazine's own cache line, without a
    /// lookup in the layout table. All zero while there is no stack, which
    /// fails the slot test. With them a magazine is 64 bytes, so that an
    /// index scales with one shift.
    @usableFromInline var slabMask: UInt
    @usableFromInline var slotMultiplier: UInt
    @usableFromInline var slotBound: UInt
    @usableFromInline var secret: UInt
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

    @usableFromInline
    static func initializeRecord(at record: UnsafeMutableRawPointer) {
        // Zero-filled memory is a valid record: no stacks, counts, limits or tops.
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

    /// Objects in the magazine of the cache at `index`.
    @inlinable @inline(__always)
    func count(_ index: Int) -> Int { magazine(index).pointee.count.load(ordering: .relaxed) }

    /// Pops an object from the magazine at `index`, or nil when it is empty.
    @inlinable @inline(__always)
    func pop(_ index: Int) -> UnsafeMutableRawPointer? {
        let m = magazine(index)
        let n = m.pointee.count.load(ordering: .relaxed)
        guard n > 0 else { return nil }
        let p = m.pointee.top
        m.pointee.top = m.pointee.stack.unsafelyUnwrapped[n &- 2]  // the spare entry when n == 1
        m.pointee.count.store(n &- 1, ordering: .relaxed)
        return p
    }

    /// Pushes a freed object onto the magazine at `index` if it has room.
    @inlinable @inline(__always)
    func push(_ p: UnsafeMutableRawPointer, _ index: Int) -> Bool {
        push(p, onto: magazine(index))
    }

    /// Pushes a freed object onto magazine `m` (one of this record's) if it has room.
    @inlinable @inline(__always)
    func push(_ p: UnsafeMutableRawPointer, onto m: UnsafeMutablePointer<Magazine>) -> Bool {
        let n = m.pointee.count.load(ordering: .relaxed)
        guard n < m.pointee.limit else { return false }
        m.pointee.stack.unsafelyUnwrapped[n] = p
        m.pointee.top = p
        m.pointee.count.store(n &+ 1, ordering: .relaxed)
        return true
    }

    /// The stack of the magazine at `index` (slow paths move runs of it).
    func stack(_ index: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer> { magazine(index).pointee.stack! }

    /// Sets the count at `index` and refreshes its top copy (slow paths).
    func setCount(_ index: Int, _ n: Int) {
        let m = magazine(index)
        if n > 0 { m.pointee.top = m.pointee.stack![n - 1] }
        m.pointee.count.store(n, ordering: .relaxed)
    }

    func limit(_ index: Int) -> Int { magazine(index).pointee.limit }

    /// Whether the cache at `index` has a stack yet.
    func hasStack(_ index: Int) -> Bool { magazine(index).pointee.stack != nil }

    /// Gives the cache at `index`, laid out as `layout`, a stack of `limit`
    /// entries (owner thread, once per cache while attached to its system).
    func makeStack(_ index: Int, limit: Int, layout: ObjectLayout) {
        let storage = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: limit + 1)
        storage.initialize(to: UnsafeMutableRawPointer(header))  // the spare entry below the base: read, never used
        let m = magazine(index)
        m.pointee.stack = storage + 1
        m.pointee.limit = limit
        m.pointee.slabMask = layout.slabMask
        m.pointee.slotMultiplier = layout.slotMultiplier
        m.pointee.slotBound = layout.slotBound
        m.pointee.secret = layout.secret
    }

    /// Leaves the stack of the cache at `index` no room, so that every free
    /// of its objects takes the slow path (the cache became checked-only).
    func closeStack(_ index: Int) { magazine(index).pointee.limit = 0 }

    /// Frees the stack of the cache at `index` (its objects must have been
    /// returned, or be forgotten) and forgets it.
    func freeStack(_ index: Int) {
        let m = magazine(index)
        guard let stack = m.pointee.stack else { return }
        (stack - 1).deallocate()
        m.pointee.stack = nil
        m.pointee.count.store(0, ordering: .relaxed)
        m.pointee.limit = 0
        m.pointee.slabMask = 0
        m.pointee.slotMultiplier = 0
        m.pointee.slotBound = 0
        m.pointee.secret = 0
    }

    /// Indices whose stacks exist (walks the records; slow).
    func usedIndices(below bound: Int) -> [Int] {
        (0..<min(bound, maxObjectCaches)).filter { hasStack($0) }
    }
}

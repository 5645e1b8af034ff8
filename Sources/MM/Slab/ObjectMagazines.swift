// SPDX-License-Identifier: Apache-2.0
public import CMMShims
import Glibc
import Synchronization

/// Most object caches a system can create in its lifetime, kmalloc classes included.
@usableFromInline let maxObjectCaches = 1024

/// A thread's stacks of free objects, one per object cache of one system:
/// the allocate/free pair of the fast path pops and pushes here with plain
/// loads and stores — no lock, no atomic read-modify-write.
/// Kernel analogue: `struct kmem_cache_cpu` / the per-CPU sheaves of SLUB,
/// per thread here; Bonwick's magazines.
///
/// Layout (raw memory reached through a C `_Thread_local` slot): a 64-byte
/// header — system identifier, drain request — then one 32-byte record per
/// cache index: the stack's base, its count (a relaxed atomic, so that
/// statistics may read it from another thread), its limit, and a copy of
/// the top entry. The copy keeps a pop off the count's dependency chain:
/// the object comes from one load, not from a load of the count and then
/// of the stack (an allocate+free pair went from 25 to ~15 cycles of
/// latency). Every stack has one spare entry below its base, so that a pop
/// of the last object may read the entry under it. The records are
/// an anonymous mapping of `maxObjectCaches` entries, so records of caches
/// the thread never used cost no memory; a stack is allocated on the
/// thread's first refill of that cache.
@usableFromInline
struct ObjectMagazines: Hashable, @unchecked Sendable {  // the raw memory is only written by its owner thread, except as documented
    @usableFromInline let base: UnsafeMutableRawPointer

    @usableFromInline init(base: UnsafeMutableRawPointer) { self.base = base }

    /// The fast-path key of a system whose object fast path is closed: no
    /// magazine is ever owned by it.
    @usableFromInline static let closedKey = UInt64.max

    @usableFromInline static let headerBytes = 64
    @usableFromInline static let recordBytes = 32
    static let byteCount = headerBytes + maxObjectCaches * recordBytes

    /// The calling thread's magazines, if it has any.
    @inlinable @inline(__always)
    static var current: ObjectMagazines? {
        guard let p = cmm_thread_slots_get().pointee.objectCaches else { return nil }
        return ObjectMagazines(base: p)
    }

    /// The system whose objects the magazines hold (0: none).
    @inlinable @inline(__always)
    var systemID: UInt64 {
        get { base.load(as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, as: UInt64.self) }
    }

    /// Set by another thread to ask the owner to return its objects at its next slow path.
    var drainRequest: UnsafeMutablePointer<Atomic<Int>> {
        (base + 8).assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// The 32-byte record of the cache at `index`: stack base (0), count (8), limit (16), top copy (24).
    @inlinable @inline(__always)
    func record(_ index: Int) -> UnsafeMutableRawPointer {
        base + (ObjectMagazines.headerBytes &+ index &* ObjectMagazines.recordBytes)
    }

    /// The stack of the cache at `index`: its objects' addresses.
    @inlinable @inline(__always)
    func stack(_ index: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer> {
        record(index).load(as: UnsafeMutablePointer<UnsafeMutableRawPointer>.self)
    }

    @inlinable @inline(__always)
    func count(_ index: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        (record(index) + 8).assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// The object on top of the stack (meaningful while the count is positive).
    @inlinable @inline(__always)
    func top(_ index: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer> {
        (record(index) + 24).assumingMemoryBound(to: UnsafeMutableRawPointer.self)
    }

    /// Sets the count of the stack at `index` and refreshes its top copy (slow paths).
    func setCount(_ index: Int, _ n: Int) {
        if n > 0 { top(index).pointee = stack(index)[n - 1] }
        count(index).pointee.store(n, ordering: .relaxed)
    }

    @inlinable @inline(__always)
    func limit(_ index: Int) -> Int {
        (record(index) + 16).load(as: Int.self)
    }

    /// Whether the cache at `index` has a stack yet.
    func hasStack(_ index: Int) -> Bool {
        record(index).load(as: UInt.self) != 0
    }

    /// Gives the cache at `index` a stack of `limit` entries (owner thread, once per cache).
    func makeStack(_ index: Int, limit: Int) {
        let record = record(index)
        let storage = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: limit + 1)
        storage.initialize(to: base)  // the spare entry below the base: read, never used
        record.storeBytes(of: storage + 1, as: UnsafeMutablePointer<UnsafeMutableRawPointer>.self)
        (record + 16).storeBytes(of: limit, as: Int.self)
    }

    /// Leaves the stack of the cache at `index` no room, so that every free
    /// of its objects takes the slow path (the cache became checked-only).
    func closeStack(_ index: Int) {
        (record(index) + 16).storeBytes(of: 0, as: Int.self)
    }

    /// Frees the stack of the cache at `index` (its objects must have been returned) and forgets it.
    func freeStack(_ index: Int) {
        (stack(index) - 1).deallocate()
        clearStack(index)
    }

    /// Forgets the stack of the cache at `index`.
    private func clearStack(_ index: Int) {
        let record = record(index)
        record.storeBytes(of: 0, as: UInt.self)
        count(index).pointee.store(0, ordering: .relaxed)
        (record + 16).storeBytes(of: 0, as: Int.self)
    }

    /// Frees every stack without returning its objects and attaches the
    /// magazines to no system (the objects' system is gone, or has taken
    /// them back). `bound` limits the records walked.
    func forget(below bound: Int) {
        for index in usedIndices(below: bound) { freeStack(index) }
        drainRequest.pointee.store(0, ordering: .relaxed)
        systemID = 0
    }

    /// Indices whose stacks exist (walks the records; slow).
    func usedIndices(below bound: Int) -> [Int] {
        (0..<min(bound, maxObjectCaches)).filter { hasStack($0) }
    }

    // MARK: Creation and thread exit

    /// The calling thread's magazines, created (attached to no system) on first use.
    static func currentOrCreate() -> ObjectMagazines {
        if let m = current { return m }
        let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else {
            fatalError("swift-mm: cannot map \(byteCount) bytes for a thread's object magazines (errno \(errno))")
        }
        (raw + 8).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        cmm_thread_slots_get().pointee.objectCaches = raw
        pthread_setspecific(threadExitKey.key, raw)
        return ObjectMagazines(base: raw)
    }

    /// Returns every object to its system (if alive) and frees the stacks
    /// and records. Runs at thread exit.
    static let threadExitKey = ThreadExitKey { raw in
        guard let raw else { return }
        let m = ObjectMagazines(base: raw)
        SystemRegistry.shared.detach(m)
        if cmm_thread_slots_get().pointee.objectCaches == raw { cmm_thread_slots_get().pointee.objectCaches = nil }
        munmap(raw, byteCount)
    }

    /// Unmaps the records of a thread that no longer exists (a forked child's
    /// copy of another thread's magazines, already forgotten).
    static func unmapRecords(_ m: ObjectMagazines) {
        munmap(m.base, byteCount)
    }
}

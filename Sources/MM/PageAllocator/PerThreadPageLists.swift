// SPDX-License-Identifier: Apache-2.0
public import CMMShims
import Glibc
import Synchronization

/// Orders served by per-thread page lists: 0 ... `costlyOrder`.
@usableFromInline let perThreadOrderCount = costlyOrder + 1

/// Largest per-thread list, in blocks, for each order.
@usableFromInline let perThreadListLimits: (Int, Int, Int, Int) = (64, 32, 16, 16)

/// A thread's lists of free blocks of orders 0–3, taken from one system's
/// buddy zone in batches so that the common allocate/free pair needs no lock.
/// Kernel analogue: `struct per_cpu_pages` (the pcp lists), per thread here.
///
/// The lists live in raw memory owned by the thread and reached through a C
/// `_Thread_local` slot. Only the owning thread pushes and pops. The counts
/// and statistics counters are relaxed atomics (plain loads and stores on
/// x86-64) so that `statistics()` may read them from another thread.
///
/// A thread's lists serve one system at a time; using another system first
/// returns every cached block to the previous one (see `SystemRegistry`).
@usableFromInline
struct PerThreadPageLists {
    @usableFromInline let base: UnsafeMutableRawPointer

    @usableFromInline init(base: UnsafeMutableRawPointer) { self.base = base }

    @usableFromInline static let byteCount = 576
    @usableFromInline static let countsOffset = 16
    @usableFromInline static let allocatedOffset = 48
    @usableFromInline static let freedOffset = 56

    /// The lists of the calling thread, if it has any.
    @inlinable @inline(__always)
    static var current: PerThreadPageLists? {
        guard let p = cmm_thread_slots_get().pointee.pageLists else { return nil }
        return PerThreadPageLists(base: p)
    }

    /// Identifier of the system whose blocks the lists hold (0: none).
    @inlinable @inline(__always)
    var systemID: UInt64 {
        get { base.load(as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, as: UInt64.self) }
    }

    @inlinable @inline(__always)
    func count(_ order: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        (base + PerThreadPageLists.countsOffset).assumingMemoryBound(to: Atomic<Int>.self) + order
    }

    @inlinable @inline(__always)
    var allocatedCounter: UnsafeMutablePointer<Atomic<Int>> {
        (base + PerThreadPageLists.allocatedOffset).assumingMemoryBound(to: Atomic<Int>.self)
    }

    @inlinable @inline(__always)
    var freedCounter: UnsafeMutablePointer<Atomic<Int>> {
        (base + PerThreadPageLists.freedOffset).assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// Set by another thread to ask the owner to return its blocks
    /// (checked whenever the owner takes a slow path).
    var drainRequest: UnsafeMutablePointer<Atomic<Int>> {
        (base + 8).assumingMemoryBound(to: Atomic<Int>.self)
    }

    @inlinable @inline(__always)
    func slots(_ order: Int) -> UnsafeMutablePointer<UInt32> {
        // order 0: 64 slots at 64, order 1: 32 at 320, order 2: 16 at 448, order 3: 16 at 512
        let offset = order == 0 ? 64 : (order == 1 ? 320 : (order == 2 ? 448 : 512))
        return (base + offset).assumingMemoryBound(to: UInt32.self)
    }

    /// Adds a relaxed counter without a read-modify-write instruction: only
    /// the owner thread writes these counters.
    @inlinable @inline(__always)
    static func bump(_ counter: UnsafeMutablePointer<Atomic<Int>>, by n: Int = 1) {
        counter.pointee.store(counter.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Empties the lists without returning their blocks and attaches them to
    /// no system (the blocks' system is gone, or has taken them back).
    func forget() {
        for order in 0..<perThreadOrderCount { count(order).pointee.store(0, ordering: .relaxed) }
        drainRequest.pointee.store(0, ordering: .relaxed)
        systemID = 0
    }

    /// Total pages held in all four lists.
    var cachedPages: Int {
        var total = 0
        for order in 0..<perThreadOrderCount { total += count(order).pointee.load(ordering: .relaxed) << order }
        return total
    }

    // MARK: Creation and thread exit

    /// The calling thread's lists, created (empty, attached to no system) on first use.
    static func currentOrCreate() -> PerThreadPageLists {
        if let lists = current { return lists }
        let base = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        base.storeBytes(of: 0, as: UInt64.self)
        let atomics = (base + 8).bindMemory(to: Atomic<Int>.self, capacity: 7)
        for i in 0..<7 { (atomics + i).initialize(to: Atomic(0)) }
        cmm_thread_slots_get().pointee.pageLists = base
        // A pthread key destructor returns the blocks when the thread exits.
        pthread_setspecific(threadExitKey.key, base)
        return PerThreadPageLists(base: base)
    }

    /// Runs at thread exit: returns every block to its system, frees the lists.
    static let threadExitKey = ThreadExitKey { raw in
        guard let raw else { return }
        let lists = PerThreadPageLists(base: raw)
        SystemRegistry.shared.detach(lists)
        if cmm_thread_slots_get().pointee.pageLists == raw { cmm_thread_slots_get().pointee.pageLists = nil }
        raw.deallocate()
    }
}

/// A `pthread_key_t` whose destructor runs a Swift function at thread exit.
/// Kernel analogue: none; the kernel drains pcp lists on CPU hot-unplug.
final class ThreadExitKey: Sendable {
    let key: pthread_key_t

    init(_ destructor: @convention(c) (UnsafeMutableRawPointer?) -> Void) {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, destructor)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        self.key = key
    }
}

// SPDX-License-Identifier: Apache-2.0
public import CMMShims
import Synchronization

/// The object layer's fast path: what `MemorySystem.allocate`/`deallocate`
/// and `ObjectCache` inline into the caller. A hit pops or pushes the
/// calling thread's magazine for the cache: a thread-local load, plain loads
/// and stores, no lock, no atomic read-modify-write, no reference counting.
/// Kernel analogue: `slab_alloc_node`/`do_slab_free` fast paths (the
/// per-CPU freelist), per thread here.
///
/// A free checks, before the push, that the pointer is the start of a slot
/// and that the slot does not carry the free canary (double free) or the
/// fresh canary (never allocated); anything unusual goes to the slow path,
/// which names the problem.
@usableFromInline
struct ObjectFastPath: @unchecked Sendable {  // raw pointers into tables owned by `slab`, which it keeps alive
    @usableFromInline let directMap: UnsafeMutableRawPointer
    @usableFromInline let capacityBytes: UInt
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    @usableFromInline let layouts: UnsafeMutablePointer<ObjectLayout>
    /// The system's identifier while the fast path is open,
    /// `ObjectMagazines.closedKey` while every object request must take the
    /// slow path: one compare with the magazines' owner checks both.
    @usableFromInline let fastPathKey: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let slab: SlabAllocator

    init(slab: SlabAllocator) {
        self.slab = slab
        directMap = slab.core.arena.directMap
        capacityBytes = UInt(slab.core.arena.capacity)
        frames = slab.core.arena.frames
        layouts = slab.layouts
        fastPathKey = slab.core.objectFastPathKey
    }

    /// Pops an object of the cache at `index` from the calling thread's
    /// magazine; nil on a miss.
    @inlinable @inline(__always)
    func allocateFast(_ index: Int) -> UnsafeMutableRawPointer? {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        guard let raw = slots.pointee.objectCaches, slots.pointee.heldCheckedLocks == 0 else { return nil }
        let m = ObjectMagazines(base: raw)
        guard m.systemID == fastPathKey.pointee.load(ordering: .relaxed) else { return nil }
        let count = m.count(index)
        let n = count.pointee.load(ordering: .relaxed)
        guard n > 0 else { return nil }
        let top = m.top(index)
        let p = top.pointee
        top.pointee = m.stack(index)[n &- 2]  // the spare entry when n == 1
        count.pointee.store(n &- 1, ordering: .relaxed)
        (p + ObjectLayout.fastCanaryOffset).storeBytes(of: 0, as: UInt.self)
        return p
    }

    /// Allocates from the cache at `index`: magazine hit, else the slow path.
    @inlinable @inline(__always)
    func allocate(_ index: Int, byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?,
                  file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        if policy.group == nil && policy.isCoherent, let p = allocateFast(index) {
            if policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: (layouts + index).pointee.size) }
            return p
        }
        return slab.allocateSlow(index: index, byteCount: byteCount, policy: policy, guarantee: guarantee,
                                 file: file, line: line)
    }

    /// The cache index owning the direct-map page at `offset`, plus one (0: not a slab page).
    @inlinable @inline(__always)
    func owner(atOffset offset: UInt) -> UInt32 {
        (frames + Int(truncatingIfNeeded: offset &>> UInt(pageShift))).pointee.owner
    }

    /// Frees an object whose slab page names cache `owner - 1`. Caches the
    /// fast path must not serve (debug flags, destroyed) give threads no
    /// magazine room (limit 0), so the push check sends their frees to the
    /// slow path without a test of its own.
    @inlinable @inline(__always)
    func free(_ p: UnsafeMutableRawPointer, offset: UInt, owner: UInt32) {
        let index = Int(truncatingIfNeeded: owner &- 1)
        if let raw = cmm_thread_slots_get().pointee.objectCaches {
            let m = ObjectMagazines(base: raw)
            let layout = layouts + index
            let inSlab = offset & layout.pointee.slabMask
            let slot = (inSlab &* layout.pointee.reciprocal) &>> 32
            let canary = layout.pointee.freeCanary(UInt(bitPattern: p))
            let canaryWord = p + ObjectLayout.fastCanaryOffset
            // The slot check comes first: it also proves the canary word aligned and inside the slot.
            if m.systemID == fastPathKey.pointee.load(ordering: .relaxed)
                && slot &* UInt(bitPattern: layout.pointee.stride) == inSlab
                && slot < UInt(bitPattern: layout.pointee.objectsPerSlab)
                && (canaryWord.load(as: UInt.self) ^ canary) > 1 {
                let count = m.count(index)
                let n = count.pointee.load(ordering: .relaxed)
                if n < m.limit(index) {
                    canaryWord.storeBytes(of: canary, as: UInt.self)
                    m.stack(index)[n] = p
                    m.top(index).pointee = p
                    count.pointee.store(n &+ 1, ordering: .relaxed)
                    return
                }
            }
        }
        slab.freeSlow(p)
    }
}

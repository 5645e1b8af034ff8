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
@frozen @usableFromInline
struct ObjectAllocator: @unchecked Sendable {  // raw pointers into tables owned by `slab`, which it keeps alive
    @usableFromInline let systemID: UInt64
    @usableFromInline let directMap: UnsafeMutableRawPointer
    @usableFromInline let capacityBytes: UInt
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    @usableFromInline let layouts: UnsafeMutablePointer<ObjectLayout>
    /// Nonzero while every object request must take the slow path.
    @usableFromInline let closed: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let slab: SlabAllocator

    init(slab: SlabAllocator) {
        self.slab = slab
        systemID = slab.systemID
        directMap = slab.core.arena.directMap
        capacityBytes = UInt(slab.core.arena.capacity)
        frames = slab.core.arena.frames
        layouts = slab.layouts
        closed = slab.core.objectFastPathClosed
    }

    /// Pops an object of the cache at `index` from the calling thread's
    /// magazine; nil on a miss.
    @inlinable @inline(__always)
    func allocateFast(_ index: Int) -> UnsafeMutableRawPointer? {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        guard let raw = slots.pointee.objectCaches, slots.pointee.heldCheckedLocks == 0 else { return nil }
        let m = ObjectMagazines(base: raw)
        guard m.systemID == systemID, closed.pointee.load(ordering: .relaxed) == 0 else { return nil }
        let count = m.count(index)
        let n = count.pointee.load(ordering: .relaxed)
        guard n > 0 else { return nil }
        let p = m.stack(index)[n &- 1]
        count.pointee.store(n &- 1, ordering: .relaxed)
        (p + (layouts + index).pointee.canaryOffset).storeBytes(of: 0, as: UInt.self)
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

    /// Frees an object whose slab page names cache `owner - 1`.
    @inlinable @inline(__always)
    func free(_ p: UnsafeMutableRawPointer, offset: UInt, owner: UInt32) {
        let index = Int(truncatingIfNeeded: owner &- 1)
        let layout = layouts + index
        if layout.pointee.checkedOnly == 0, let raw = cmm_thread_slots_get().pointee.objectCaches {
            let m = ObjectMagazines(base: raw)
            let inSlab = offset & layout.pointee.slabMask
            let slot = (inSlab &* layout.pointee.reciprocal) &>> 32
            let address = UInt(bitPattern: p)
            let canary = layout.pointee.freeCanary(address)
            let canaryWord = p + layout.pointee.canaryOffset
            // The slot check comes first: it also proves the canary word aligned.
            if m.systemID == systemID && closed.pointee.load(ordering: .relaxed) == 0
                && slot &* UInt(bitPattern: layout.pointee.stride) == inSlab
                && slot < UInt(bitPattern: layout.pointee.objectsPerSlab),
               case let word = canaryWord.load(as: UInt.self), (word ^ canary) > 1
                && (layout.pointee.canaryOffset != 0 || !plausibleLink(word, at: address, layout)) {
                let count = m.count(index)
                let n = count.pointee.load(ordering: .relaxed)
                if n < m.limit(index) {
                    canaryWord.storeBytes(of: canary, as: UInt.self)
                    m.stack(index)[n] = p
                    count.pointee.store(n &+ 1, ordering: .relaxed)
                    return
                }
            }
        }
        slab.freeSlow(p)
    }

    /// Whether a one-word object's word could be a slab free-list link (then
    /// the slow path looks for the object on its slab's free list).
    @inlinable @inline(__always)
    func plausibleLink(_ word: UInt, at address: UInt, _ layout: UnsafeMutablePointer<ObjectLayout>) -> Bool {
        let link = word ^ layout.pointee.secret ^ address.byteSwapped
        return link == 0 || (link ^ address) <= layout.pointee.slabMask
    }
}

// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Synchronization

/// The object layer's fast path: what `MemorySystem.allocate`/`deallocate`
/// and `ObjectCache` inline into the caller. A hit pops or pushes the
/// calling thread's magazine for the cache: a thread-local load, plain loads
/// and stores, no lock, no atomic read-modify-write, no reference counting.
/// A miss returns nil (allocate) or false (free) and the caller takes the
/// slow path. Kernel analogue: `slab_alloc_node`/`do_slab_free` fast paths
/// (the per-CPU freelist), per thread here.
///
/// A free checks, before the push, that the pointer is the start of a slot
/// and that the slot does not carry the free canary (double free) or the
/// fresh canary (never allocated); anything unusual goes to the slow path,
/// which names the problem.
@usableFromInline
struct ObjectFastPath: @unchecked Sendable {  // raw pointers into the slab layer's tables; its holder keeps that layer alive
    @usableFromInline let directMap: UnsafeMutableRawPointer
    @usableFromInline let capacityBytes: UInt
    @usableFromInline let frames: UnsafeMutablePointer<PageFrame>
    @usableFromInline let layouts: UnsafeMutablePointer<ObjectLayout>
    /// The system's identifier: a thread's magazines serve this fast path
    /// while their fast-path key equals it (attached to this system, its
    /// gate open); one compare checks both.
    @usableFromInline let systemID: UInt64

    /// Plain values only (no reference to `slab`): copying the fast path
    /// costs no reference counting, and the process allocator keeps a copy
    /// in a global. Whoever holds one keeps `slab` alive.
    init(slab: SlabAllocator) {
        directMap = slab.pages.arena.directMap
        capacityBytes = UInt(slab.pages.arena.capacity)
        frames = slab.pages.arena.frames
        layouts = slab.layouts
        systemID = slab.systemID
    }

    /// Pops an object of the cache at `index` from the calling thread's
    /// magazine; nil on a miss.
    @inlinable @inline(__always)
    func allocate(_ index: Int) -> UnsafeMutableRawPointer? {
        allocate(index, from: ObjectMagazines.currentOrEmptyForFastPath)
    }

    /// Pops an object of the cache at `index` from the magazines `m` (the
    /// calling thread's, or the empty record); nil on a miss.
    @inlinable @inline(__always)
    func allocate(_ index: Int, from m: ObjectMagazines) -> UnsafeMutableRawPointer? {
        guard let p = Self.allocate(index, from: m, key: systemID) else { return nil }
        assert(UInt(bitPattern: p) &- UInt(bitPattern: directMap) < capacityBytes
               && (frames + Int((UInt(bitPattern: p) &- UInt(bitPattern: directMap)) &>> UInt(pageShift))).pointee.owner != 0,
               "swift-mm internal: a magazine of cache \(index) holds \(p), which is not in a slab")
        return p
    }

    /// Pops an object of the cache at `index` from the magazines `m` if
    /// their fast-path key is `key` (the identifier of the system they must
    /// serve); nil otherwise or on a miss.
    @inlinable @inline(__always)
    static func allocate(_ index: Int, from m: ObjectMagazines, key: UInt64) -> UnsafeMutableRawPointer? {
        guard m.fastPathKey == key, let p = m.pop(index) else { return nil }
        (p + ObjectLayout.fastCanaryOffset).storeBytes(of: 0, as: UInt.self)
        return p
    }

    /// Allocates from the cache at `index` for a request with `policy`
    /// (zeroed if it asks); nil on a miss or when the policy needs the slow path.
    @inlinable @inline(__always)
    func allocate(_ index: Int, policy: AllocationPolicy) -> UnsafeMutableRawPointer? {
        guard policy.group == nil && policy.isCoherent, let p = allocate(index) else { return nil }
        if policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: (layouts + index).pointee.size) }
        return p
    }

    /// The usable size of the live object at `p` (at `offset` in the direct
    /// map, on a slab page of cache `owner - 1`), checked as the slow path's
    /// `validate` checks it — the start of a slot, neither free nor never
    /// allocated — in a multiply, a compare and a load; nil when the slow
    /// path must look (to name the problem, or for the caches whose canary
    /// shares the link word). What `malloc_usable_size` asks on every
    /// `Array` and `String` growth in a Swift program.
    @inlinable @inline(__always)
    func usableSize(_ p: UnsafeRawPointer, offset: UInt, owner: UInt32) -> Int? {
        let layout = layouts + Int(truncatingIfNeeded: owner &- 1)
        guard layout.pointee.canaryOffset == ObjectLayout.fastCanaryOffset,
              ObjectLayout.isSlotStart(offset & layout.pointee.slabMask, multiplier: layout.pointee.slotMultiplier,
                                       bound: layout.pointee.slotBound),
              ((p + ObjectLayout.fastCanaryOffset).load(as: UInt.self) ^ layout.pointee.freeCanary(UInt(bitPattern: p))) > 1
        else { return nil }
        return layout.pointee.size
    }

    /// The cache index owning the direct-map page at `offset`, plus one (0: not a slab page).
    @inlinable @inline(__always)
    func owner(atOffset offset: UInt) -> UInt32 {
        (frames + Int(truncatingIfNeeded: offset &>> UInt(pageShift))).pointee.owner
    }

    /// Pushes a freed object whose slab page names cache `owner - 1` onto
    /// the calling thread's magazine; false when the slow path must see it.
    /// Caches the fast path must not serve (debug flags, destroyed) give
    /// threads no magazine room (limit 0), so the push check sends their
    /// frees to the slow path without a test of its own.
    @inlinable @inline(__always)
    func free(_ p: UnsafeMutableRawPointer, offset: UInt, owner: UInt32) -> Bool {
        free(p, offset: offset, owner: owner, into: ObjectMagazines.currentOrEmpty)
    }

    /// `free` onto the magazines `m` (the calling thread's, or the empty record).
    @inlinable @inline(__always)
    func free(_ p: UnsafeMutableRawPointer, offset: UInt, owner: UInt32, into m: ObjectMagazines) -> Bool {
        let magazine = m.magazine(owner: owner)
        let inSlab = offset & magazine.pointee.slabMask
        let canary = magazine.pointee.secret ^ UInt(bitPattern: p)
        let canaryWord = p + ObjectLayout.fastCanaryOffset
        #if MM_UNSAFE_NO_FREE_CHECKS
        // Only for measuring what the checks cost (scripts/instructions.sh
        // --without-free-checks): an interior pointer or a double free corrupts.
        _ = (inSlab, canary, canaryWord)
        guard m.fastPathKey == systemID, m.push(p, onto: magazine) else { return false }
        return true
        #else
        // The slot check comes first: it also proves the canary word aligned and inside the slot.
        // A magazine without a stack has a zero slot bound, which no offset passes.
        guard m.fastPathKey == systemID
              && ObjectLayout.isSlotStart(inSlab, multiplier: magazine.pointee.slotMultiplier,
                                                      bound: magazine.pointee.slotBound)
              && (canaryWord.load(as: UInt.self) ^ canary) > 1,
              m.push(p, onto: magazine) else { return false }
        canaryWord.storeBytes(of: canary, as: UInt.self)
        return true
        #endif
    }
}

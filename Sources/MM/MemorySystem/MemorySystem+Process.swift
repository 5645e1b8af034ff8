// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Synchronization

extension MemorySystem {
    /// The system that serves `malloc` and `free` of this process when the
    /// process allocator (`libmmmalloc.so`, the `mmmalloc` product) is
    /// loaded, once it has served its first allocation; nil otherwise. Register
    /// shrinkers, groups and scopes against it to govern the memory the
    /// process really uses. (A program that links its own copy of MM and runs
    /// under `LD_PRELOAD` sees nil here: the preloaded library's system is
    /// another copy's.)
    public static var process: MemorySystem? {
        guard let raw = UnsafeRawPointer(bitPattern: processSystem.load(ordering: .acquiring)) else { return nil }
        return Unmanaged<MemorySystem>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Installs the process allocator's system (once, by libmmmalloc).
    @_spi(ProcessAllocator)
    public static func _installProcessSystem(_ system: MemorySystem) {
        let raw = Unmanaged.passRetained(system).toOpaque()
        if !processSystem.compareExchange(expected: 0, desired: UInt(bitPattern: raw), ordering: .acquiringAndReleasing).exchanged {
            Unmanaged<MemorySystem>.fromOpaque(raw).release()
        }
    }

    /// Reports a violation found by a layer above the system (the process
    /// allocator's guarded allocations): an event, counted in vmstat, and a
    /// trap under `HardeningAction.trap`, exactly as the system's own checks.
    @_spi(ProcessAllocator)
    public func _reportHardeningViolation(_ kind: HardeningViolation.Kind, operation: String,
                                          pointer: UnsafeRawPointer, detail: String) {
        pages.report(HardeningViolation(kind: kind, operation: operation, pointer: UInt(bitPattern: pointer), detail: detail))
    }

    /// The object fast paths alone, as a plain value for the process
    /// allocator's entry to keep in a global: using it needs no reference
    /// to the system, so no reference counting and no closure. Valid while
    /// the system lives (the process allocator's never dies).
    @_spi(ProcessAllocator)
    public var _magazineFastPath: _MagazineFastPath { _MagazineFastPath(objects: objectFastPath) }

    /// Whether `pointer` lies in memory this system manages (its direct map
    /// or its vmalloc region), allocated or not: the process allocator sends
    /// every other pointer to the allocator that made it.
    /// - Parameter pointer: any address.
    /// - Returns: whether it lies in this system's direct map or vmalloc region.
    @inlinable @inline(__always)
    public func owns(_ pointer: UnsafeRawPointer) -> Bool {
        UInt(bitPattern: pointer) &- UInt(bitPattern: pageFastPath.directMap) < pageFastPath.capacityBytes
            || UInt(bitPattern: pointer) &- virtualBase < virtualBytes
    }
}

/// The process allocator's system, as a retained object's address (0: none).
private let processSystem = Atomic<UInt>(0)

/// The magazine fast paths of `MemorySystem.allocate` and `deallocate` as a
/// plain value (raw pointers into the system's tables), for the process
/// allocator's `malloc` and `free`. Kernel analogue: the per-CPU freelist
/// fast paths of `slab_alloc_node` and `do_slab_free`.
@_spi(ProcessAllocator)
public struct _MagazineFastPath: @unchecked Sendable {  // raw pointers into tables the system keeps alive
    @usableFromInline let objects: ObjectFastPath

    init(objects: ObjectFastPath) { self.objects = objects }

    /// Which of the thread's magazine slots a call goes through.
    public enum Slot: Sendable {
        /// The malloc slot: the magazines only while the thread is outside
        /// the process allocator, holds no allocator lock or
        /// `ReclaimCheckedMutex`, and malloc magazines are on
        /// (`turnOnForMalloc`); the empty record otherwise, which every call misses.
        case malloc
        /// The thread's ordinary fast-path slot, for a caller that has
        /// checked the thread is outside the allocator and holds no allocator lock.
        case ordinary
    }

    /// Lets `malloc` and `free` use the threads' magazines of this fast
    /// path's system (process-wide; once, before they are called): its
    /// identifier becomes the key `allocateFromMallocSlot` compares with.
    /// The calling thread's slot is opened now, every other thread's at its
    /// next slow path.
    public func turnOnForMalloc() {
        cmm_set_malloc_magazines(objects.systemID)
        ThreadSlots.refreshFastPathSlots()
    }

    /// A pop from the calling thread's malloc slot, of the kmalloc class at
    /// `sizeClass`, for the system that `turnOnForMalloc` named; nil on a
    /// miss. Static: it reads no fast-path value, only the C key and the
    /// thread's slot. Before malloc magazines are on (the key is 0), and
    /// whenever the slot is closed, the slot is the empty record, whose
    /// magazines are empty: every pop misses, whatever the key compare says.
    @inlinable @inline(__always)
    public static func allocateFromMallocSlot(sizeClass: Int) -> UnsafeMutableRawPointer? {
        ObjectFastPath.allocate(sizeClass, from: ObjectMagazines.currentOrEmptyForMalloc, key: cmm_malloc_magazines_key())
    }

    /// `allocateFromMallocSlot(sizeClass:)` for a request of `byteCount`
    /// bytes; nil also outside 1…8 KiB.
    @inlinable @inline(__always)
    public static func allocateFromMallocSlot(byteCount: Int) -> UnsafeMutableRawPointer? {
        guard byteCount > 0 && byteCount <= MM.kmallocMaxSize else { return nil }
        return allocateFromMallocSlot(sizeClass: SizeClass.index(forBytes: byteCount))
    }

    @inlinable @inline(__always)
    static func magazines(_ slot: Slot) -> ObjectMagazines {
        switch slot {
        case .malloc: ObjectMagazines.currentOrEmptyForMalloc
        case .ordinary: ObjectMagazines.currentOrEmptyForFastPath
        }
    }

    /// A pop from the calling thread's magazine of `byteCount`'s kmalloc
    /// class; nil on a miss, for a size outside 1…8 KiB, or while the fast
    /// path is closed. Never takes a lock, allocates or blocks.
    @inlinable @inline(__always)
    public func allocate(byteCount: Int, slot: Slot = .malloc) -> UnsafeMutableRawPointer? {
        guard byteCount > 0 && byteCount <= MM.kmallocMaxSize else { return nil }
        return objects.allocate(SizeClass.index(forBytes: byteCount), from: Self.magazines(slot))
    }

    /// The kmalloc class index that serves a request of `byteCount` bytes
    /// (1…8 KiB): the `sizeClass` argument of `allocateFromMallocSlot(sizeClass:)`.
    public static func sizeClass(forBytes byteCount: Int) -> Int {
        precondition(byteCount > 0 && byteCount <= MM.kmallocMaxSize, "no kmalloc class serves \(byteCount) bytes")
        return SizeClass.index(forBytes: byteCount)
    }

    /// A push onto the calling thread's magazine after the same checks as
    /// `deallocate` (slot boundary, double free, owning system). False when
    /// the pointer is nil or not an object of the system's direct map, the
    /// magazine is full, a check fails or the slot is closed: the caller then
    /// hands it to `deallocate`, which sees the same pointer again and frees
    /// or reports it on its slow path. Never takes a lock, allocates or blocks.
    ///
    /// Two tests that `deallocate` makes are folded into others here:
    /// - nil fails the range check (the direct map never reaches the top of
    ///   the address space, so `0 - directMap` is beyond its size);
    /// - a page that is not a slab's has owner 0, and "the magazine of owner
    ///   0" is the thread record's header (`magazine(owner:)` is `header +
    ///   owner * 64`), whose slot-bound word lies past the header's fields and
    ///   is always zero (`_headerLeavesSlotBoundZero`): no offset passes the
    ///   slot test, so the push is refused as for any other non-object.
    @inlinable @inline(__always)
    public func free(_ pointer: UnsafeMutableRawPointer?, slot: Slot = .malloc) -> Bool {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: objects.directMap)
        guard offset < objects.capacityBytes else { return false }
        let owner = objects.owner(atOffset: offset)
        #if MM_UNSAFE_NO_FREE_CHECKS
        // Without the slot test, nothing else refuses owner 0.
        guard owner != 0 else { return false }
        #endif
        return objects.free(pointer.unsafelyUnwrapped, offset: offset, owner: owner, into: Self.magazines(slot))
    }

    /// The usable size of the live object at `pointer` (its kmalloc or
    /// object cache's object size), checked as `usableSize(of:)` checks it
    /// — the start of a slot, neither free nor never allocated — without a
    /// reference to the system, a lock or a thread mark; nil when the pointer
    /// is nil, not an object of the system's direct map (pages, vmalloc,
    /// another allocator's), or the check fails or cannot be made here: the
    /// caller then asks `MemorySystem.usableSize(of:)`, which names the
    /// problem. Reads only the page's owner, the cache's layout and the
    /// object's canary word. Kernel analogue: `ksize` of a slab object.
    @inlinable @inline(__always)
    public func usableSize(_ pointer: UnsafeRawPointer?) -> Int? {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: objects.directMap)
        guard offset < objects.capacityBytes else { return nil }
        let owner = objects.owner(atOffset: offset)
        guard owner != 0 else { return nil }
        return objects.usableSize(pointer.unsafelyUnwrapped, offset: offset, owner: owner)
    }

    /// Whether the thread record's header ends before the slot-bound word of
    /// the magazine that `magazine(owner: 0)` names (the header's own 64
    /// bytes), so that word stays zero and `free` needs no test for owner 0.
    public static var _headerLeavesSlotBoundZero: Bool {
        MemoryLayout<PerThreadCacheHeader>.size <= Magazine.slotBoundOffset
            && ObjectMagazines.recordOffset == MemoryLayout<Magazine>.stride
    }
}

/// Marks the calling thread as inside the process allocator (nested): while
/// it is, its allocations go to glibc and its malloc slot is closed.
@_spi(ProcessAllocator)
public enum _ProcessAllocatorThread {
    /// Enters the allocator (one level deeper).
    @inlinable @inline(__always)
    public static func enter() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        slots.pointee.mallocDepth &+= 1
        slots.pointee.objectCachesForMalloc = cmm_empty_object_caches_record()
    }

    /// Leaves it (one level).
    @inlinable @inline(__always)
    public static func leave() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        slots.pointee.mallocDepth &-= 1
        ThreadSlots.refreshMallocSlot(slots)
    }
}

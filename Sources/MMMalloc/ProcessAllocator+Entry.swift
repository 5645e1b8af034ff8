// SPDX-License-Identifier: Apache-2.0
import CMMMalloc
import CMMShims
import Glibc
@_spi(ProcessAllocator) import MM

// The C allocation functions, as CMMMalloc forwards them. C semantics:
// malloc(0) returns a unique pointer that free accepts; free(NULL) does
// nothing; realloc(p, 0) frees p and returns NULL (as glibc); failures set
// errno to ENOMEM; every pointer is aligned to 16 (max_align_t) at least;
// posix_memalign returns EINVAL for an alignment that is not a power of two
// multiple of sizeof(void *); calloc and reallocarray detect overflow.

/// The bytes to ask swift-mm for: at least 16, so that every pointer is
/// aligned to `max_align_t` (kmalloc-8 objects are aligned to 8 only; every
/// other class to 16 or more).
@inline(__always)
private func cSize(_ size: Int) -> Int { size < 16 ? 16 : size }

/// Runs `body` with swift-mm's system if this thread may use it now, marking
/// the thread as inside the allocator; nil means "let glibc serve it".
@inline(__always)
private func withProcessSystem<R>(_ body: (MemorySystem) -> R) -> R? {
    let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
    guard slots.pointee.mallocDepth == 0 && slots.pointee.forkGateDepth == 0 else { return nil }
    _ProcessAllocatorThread.enter()
    defer { _ProcessAllocatorThread.leave() }
    guard let system = ProcessAllocator.existing else { return nil }
    return system._withUnsafeGuaranteedRef(body)
}

/// The system that owns `pointer`, if it is swift-mm's.
@inline(__always)
private func owner(of pointer: UnsafeMutableRawPointer) -> Unmanaged<MemorySystem>? {
    guard let system = ProcessAllocator.existing,
          system._withUnsafeGuaranteedRef({ $0.owns(pointer) }) else { return nil }
    return system
}

/// Frees a swift-mm pointer, even from inside the allocator (a free cannot be
/// handed to another allocator); allocations made while freeing go to glibc.
/// Under `MM_HARDENING=full` the pointer is a guarded allocation: checked,
/// poisoned and quarantined (nothing is freed if the checks say the pointer
/// is not one).
@inline(__always)
private func release(_ pointer: UnsafeMutableRawPointer, to system: Unmanaged<MemorySystem>) {
    _ProcessAllocatorThread.enter()
    defer { _ProcessAllocatorThread.leave() }
    system._withUnsafeGuaranteedRef { mm in
        if GuardedAllocation.isOn {
            GuardedAllocation.free(mm, pointer, operation: "free")
        } else {
            mm.deallocate(pointer)
        }
    }
}

@inline(__always)
private func failed<T>(_ value: T) -> T {
    cmm_set_errno(ENOMEM)
    return value
}

/// A block of `bytes` for a guarded allocation aligned to at most 16.
private func guardedBlock(_ mm: MemorySystem, _ alignment: Int, _ bytes: Int) -> UnsafeMutableRawPointer? {
    alignment <= 16 ? mm.allocate(byteCount: bytes, policy: ProcessAllocator.policy)
        : allocateAligned(mm, alignment: alignment, size: bytes)
}

/// Creates the process system before the program's `main` (see
/// `ProcessAllocator`); allocations made meanwhile go to glibc.
@_cdecl("mm_process_start")
func mmProcessStart() {
    _ProcessAllocatorThread.enter()
    defer { _ProcessAllocatorThread.leave() }
    ProcessAllocator.start()
}

@_cdecl("mm_process_malloc")
func mmProcessMalloc(_ size: Int) -> UnsafeMutableRawPointer? {
    // A magazine hit needs no re-entrancy mark (it allocates nothing and takes no lock). The
    // malloc slot is closed while this thread is inside the allocator (whose own code may be in
    // the middle of updating the magazines) or holds an allocator lock, and under
    // MM_HARDENING=full: one load tests all of that.
    // No test of its own for "malloc magazines are on": the pop compares the slot's key
    // with theirs, and until they are on the slot is the empty record (see
    // `_MagazineFastPath.allocateFromMallocSlot`).
    let sizeMinusOne = UInt(bitPattern: size &- 1)
    if sizeMinusOne < 1024 {
        // The class of max(size, 16): malloc aligns to 16, and setting bit 3 moves
        // 1...8 bytes to the 16-byte class and no other size out of its class.
        if let p = _MagazineFastPath.allocateFromMallocSlot(sizeClass: Int(cmm_kmalloc_class_small(Int(sizeMinusOne | 8)))) {
            return p
        }
    } else if let p = _MagazineFastPath.allocateFromMallocSlot(byteCount: cSize(size)) {
        return p
    }
    return mallocOutsideMagazine(size)
}

/// `malloc` of everything but a magazine pop: the slow path, pages, a
/// guarded allocation, or glibc's memory while this thread is inside the allocator.
@inline(never)
private func mallocOutsideMagazine(_ size: Int) -> UnsafeMutableRawPointer? {
    // A guarded block of up to 8 KiB comes from the thread's magazine through its ordinary
    // slot, when the thread may use it (outside the allocator, no allocator lock held).
    let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
    if GuardedAllocation.isOn && slots.pointee.mallocDepth | slots.pointee.forkGateDepth == 0 && ProcessAllocator.isReady,
       let p = GuardedAllocation.allocateFromMagazine(ProcessAllocator.readyFastPath, size: size) {
        return p
    }
    guard let result = withProcessSystem({ mm in
        if GuardedAllocation.isOn {
            return GuardedAllocation.allocate(mm, size: size, alignment: 16, zeroed: false, block: guardedBlock)
        }
        // The default policy as a constant, so that the inlined fast path folds its checks.
        if cmm_policy_kind() == 0 { return mm.allocate(byteCount: cSize(size), policy: .standard) }
        return mm.allocate(byteCount: cSize(size), policy: ProcessAllocator.policy)
    }) else { return cmm_glibc_malloc(size) }
    return result ?? failed(nil)
}

@_cdecl("mm_process_free")
func mmProcessFree(_ pointer: UnsafeMutableRawPointer?) {
    // A push onto the thread's magazine needs no re-entrancy mark either (see malloc).
    // free(NULL) fails the push's range check and ends at the guard below.
    if ProcessAllocator.magazinesFirst, ProcessAllocator.readyFastPath.free(pointer) { return }
    guard let pointer else { return }
    freeOutsideMagazine(pointer)
}

/// `free` of everything but a magazine push: the slow path of an object,
/// pages, a vmalloc area, a guarded allocation, or glibc's pointer.
@inline(never)
private func freeOutsideMagazine(_ pointer: UnsafeMutableRawPointer) {
    if let system = owner(of: pointer) {
        release(pointer, to: system)
    } else {
        cmm_glibc_free(pointer)
    }
}

@_cdecl("mm_process_calloc")
func mmProcessCalloc(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    let (bytes, overflow) = UInt(bitPattern: count).multipliedReportingOverflow(by: UInt(bitPattern: size))
    guard !overflow, bytes <= UInt(Int.max) else { return failed(nil) }
    guard let result = withProcessSystem({ mm in
        if GuardedAllocation.isOn {
            return GuardedAllocation.allocate(mm, size: Int(bytes), alignment: 16, zeroed: true, block: guardedBlock)
        }
        var zeroed = ProcessAllocator.policy
        zeroed.zeroed = true
        return mm.allocate(byteCount: cSize(Int(bytes)), policy: zeroed)
    }) else { return cmm_glibc_calloc(count, size) }
    return result ?? failed(nil)
}

@_cdecl("mm_process_realloc")
func mmProcessRealloc(_ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    guard let pointer else { return mmProcessMalloc(size) }
    if size == 0 {
        mmProcessFree(pointer)
        return nil
    }
    guard let system = owner(of: pointer) else { return cmm_glibc_realloc(pointer, size) }
    let old: Int
    if GuardedAllocation.isOn {
        guard let known = GuardedAllocation.size(of: pointer) else {
            release(pointer, to: system)  // reports what is wrong with it; frees nothing
            return failed(nil)
        }
        old = known  // never in place: a smaller size must move the red zone, so it moves the allocation
    } else {
        // A live object's size as malloc_usable_size finds it; anything else through the system, which reports it.
        if ProcessAllocator.magazinesFirst, let known = ProcessAllocator.readyFastPath.usableSize(pointer) {
            old = known
        } else {
            old = system._withUnsafeGuaranteedRef { $0.usableSize(of: pointer) }
        }
        if size > 0 && size <= old { return pointer }  // (a size_t above Int.max arrives negative)
    }
    guard size > 0, let new = mmProcessMalloc(size) else { return failed(nil) }
    new.copyMemory(from: pointer, byteCount: min(old, size))
    release(pointer, to: system)
    return new
}

@_cdecl("mm_process_reallocarray")
func mmProcessReallocarray(_ pointer: UnsafeMutableRawPointer?, _ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    let (bytes, overflow) = UInt(bitPattern: count).multipliedReportingOverflow(by: UInt(bitPattern: size))
    guard !overflow, bytes <= UInt(Int.max) else { return failed(nil) }
    return mmProcessRealloc(pointer, Int(bytes))
}

/// `alignment`-aligned memory of `size` bytes: a power-of-two kmalloc class
/// (naturally aligned up to 4 KiB), pages (aligned to 4 KiB), or a block
/// whose size is at least the alignment (aligned to its size, up to 4 MiB).
private func allocateAligned(_ mm: MemorySystem, alignment: Int, size: Int) -> UnsafeMutableRawPointer? {
    if alignment <= 16 { return mm.allocate(byteCount: cSize(size), policy: ProcessAllocator.policy) }
    guard alignment <= MemorySystem.maxContiguousBytes else { return nil }
    let needed = max(size, alignment)
    if needed <= MemorySystem.kmallocMaxSize && alignment <= MemorySystem.pageSize {
        let rounded = 1 << (Int.bitWidth - (needed - 1).leadingZeroBitCount)
        return mm.allocate(byteCount: max(rounded, 16), policy: ProcessAllocator.policy)
    }
    if alignment <= MemorySystem.pageSize { return mm.allocate(byteCount: needed, policy: ProcessAllocator.policy) }
    var policy = ProcessAllocator.policy
    policy.placement = .contiguous
    let pages = (needed + MemorySystem.pageSize - 1) / MemorySystem.pageSize
    let blockBytes = MemorySystem.pageSize << (Int.bitWidth - (pages - 1).leadingZeroBitCount)
    return blockBytes <= MemorySystem.maxContiguousBytes ? mm.allocate(byteCount: blockBytes, policy: policy) : nil
}

@_cdecl("mm_process_aligned")
func mmProcessAligned(_ alignment: Int, _ size: Int, _ pageRounded: Int32) -> UnsafeMutableRawPointer? {
    guard alignment > 0, alignment & (alignment - 1) == 0, size >= 0 else {
        cmm_set_errno(EINVAL)
        return nil
    }
    let bytes = pageRounded != 0 ? (size + 4095) & ~4095 : size
    guard let result = withProcessSystem({ mm in
        GuardedAllocation.isOn
            ? GuardedAllocation.allocate(mm, size: bytes, alignment: max(16, alignment), zeroed: false, block: guardedBlock)
            : allocateAligned(mm, alignment: alignment, size: bytes)
    }) else { return cmm_glibc_memalign(alignment, bytes) }
    return result ?? failed(nil)
}

@_cdecl("mm_process_posix_memalign")
func mmProcessPosixMemalign(_ result: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ alignment: Int, _ size: Int) -> Int32 {
    guard alignment >= MemoryLayout<UnsafeRawPointer>.size, alignment & (alignment - 1) == 0 else { return EINVAL }
    guard let p = mmProcessAligned(alignment, size, 0) else { return ENOMEM }
    result.pointee = p
    return 0
}

@_cdecl("mm_process_usable_size")
func mmProcessUsableSize(_ pointer: UnsafeMutableRawPointer?) -> Int {
    // A live object of the direct map needs no thread mark: the answer is its cache's
    // object size, read without a lock (Swift asks this at every Array and String growth).
    // Not under MM_HARDENING=full, whose answer is the guarded size (magazinesFirst is off).
    if ProcessAllocator.magazinesFirst, let size = ProcessAllocator.readyFastPath.usableSize(pointer) { return size }
    guard let pointer else { return 0 }
    guard let system = owner(of: pointer) else { return cmm_glibc_usable_size(pointer) }
    _ProcessAllocatorThread.enter()
    defer { _ProcessAllocatorThread.leave() }
    if GuardedAllocation.isOn { return GuardedAllocation.size(of: pointer) ?? 0 }
    return system._withUnsafeGuaranteedRef { $0.usableSize(of: pointer) }
}

/// The calling thread's guarded-allocation quarantine, flushed at its exit
/// (and the main thread's at process exit).
@_cdecl("mm_process_quarantine_flush")
func mmProcessQuarantineFlush() {
    guard GuardedAllocation.isOn, let system = ProcessAllocator.existing else { return }
    _ProcessAllocatorThread.enter()
    defer { _ProcessAllocatorThread.leave() }
    system._withUnsafeGuaranteedRef { GuardedAllocation.flushQuarantine($0) }
}

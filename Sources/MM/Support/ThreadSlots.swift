// SPDX-License-Identifier: Apache-2.0
import CMMShims

/// The calling thread's C thread-local slots, seen from Swift.
@usableFromInline
enum ThreadSlots {
    /// Points the fast paths' slots at the thread's caches while it holds no
    /// `ReclaimCheckedMutex` and is in no thread-only charging scope, and at
    /// nothing (the magazines' at the empty record) otherwise (its
    /// allocations must reach the slow path, which checks or charges them);
    /// and the process allocator's malloc slot at the magazines only while,
    /// besides, the thread is outside that allocator and holds no allocator
    /// lock. Called whenever one of those counts crosses zero or a cache slot changes.
    static func refreshFastPathSlots() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        let open = slots.pointee.heldCheckedLocks | slots.pointee.threadChargingScopes == 0
        let empty = cmm_empty_object_caches_record()
        slots.pointee.pageListsForFastPath = open ? slots.pointee.pageLists : nil
        slots.pointee.objectCachesForFastPath = open ? slots.pointee.objectCaches : empty
        refreshMallocSlot(slots)
    }

    /// Sets the process allocator's malloc slot alone: the magazines while
    /// the thread holds no `ReclaimCheckedMutex` or allocator lock, is in no
    /// thread-only charging scope, is outside that allocator, and malloc
    /// magazines are on; else the empty record. Cheap enough for every entry into the allocator.
    @inlinable @inline(__always)
    static func refreshMallocSlot(_ slots: UnsafeMutablePointer<cmm_thread_slots>) {
        let open = slots.pointee.heldCheckedLocks | slots.pointee.threadChargingScopes | slots.pointee.mallocDepth
            | slots.pointee.forkGateDepth == 0
            && cmm_malloc_magazines_key() != 0
        slots.pointee.objectCachesForMalloc = open ? slots.pointee.objectCaches : cmm_empty_object_caches_record()
    }

    /// Whether the calling thread is exiting: one of its exit destructors
    /// has run, so its slow paths serve it without per-thread caches (one
    /// object straight from the slabs, one block straight from the buddy
    /// lists) instead of making caches that no destructor would take back.
    static var isExiting: Bool { cmm_thread_slots_get().pointee.exiting != 0 }

    /// Marks the calling thread as exiting (its first exit destructor; for good).
    static func markExiting() { cmm_thread_slots_get().pointee.exiting = 1 }

    /// The calling thread entered a thread-only charging scope (a token or
    /// `withThreadAllocationScope`): its fast paths close until it leaves the
    /// last one. Only this thread observes such a scope, so no other thread's
    /// fast path needs to step aside (a closure scope, which tasks inherit,
    /// closes the gate of every system instead: `ChargingScopes`).
    /// Kernel analogue: none needed there; `set_active_memcg` is read by
    /// `kmalloc`'s slow path, and the per-CPU caches are not per task.
    @usableFromInline
    static func enteredThreadChargingScope() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        slots.pointee.threadChargingScopes &+= 1
        if slots.pointee.threadChargingScopes == 1 { refreshFastPathSlots() }
    }

    /// The calling thread left a thread-only charging scope.
    @usableFromInline
    static func exitedThreadChargingScope() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        slots.pointee.threadChargingScopes &-= 1
        if slots.pointee.threadChargingScopes == 0 { refreshFastPathSlots() }
    }
}

// SPDX-License-Identifier: Apache-2.0
import CMMShims

/// The calling thread's C thread-local slots, seen from Swift.
enum ThreadSlots {
    /// Points the fast paths' slots at the thread's caches while it holds no
    /// `ReclaimCheckedMutex`, and at nothing (the magazines' at the empty
    /// record) while it holds one (its allocations must reach the slow path,
    /// which checks them); and the process allocator's malloc slot at the
    /// magazines only while, besides, the thread is outside that allocator
    /// and holds no allocator lock. Called whenever one of those counts
    /// crosses zero or a cache slot changes.
    static func refreshFastPathSlots() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        let open = slots.pointee.heldCheckedLocks == 0
        let empty = cmm_empty_object_caches_record()
        slots.pointee.pageListsForFastPath = open ? slots.pointee.pageLists : nil
        slots.pointee.objectCachesForFastPath = open ? slots.pointee.objectCaches : empty
        let mallocOpen = open && slots.pointee.mallocDepth == 0 && slots.pointee.forkGateDepth == 0
            && cmm_malloc_magazines_on() != 0
        slots.pointee.objectCachesForMalloc = mallocOpen ? slots.pointee.objectCaches : empty
    }
}

// SPDX-License-Identifier: Apache-2.0
import CMMShims

/// The calling thread's C thread-local slots, seen from Swift.
enum ThreadSlots {
    /// Points the fast paths' slots at the thread's caches while it holds no
    /// `ReclaimCheckedMutex`, and at nothing (the magazines' at the empty
    /// record) while it holds one (its
    /// allocations must reach the slow path, which checks them). Called
    /// whenever the count of checked locks or a cache slot changes.
    static func refreshFastPathSlots() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        let open = slots.pointee.heldCheckedLocks == 0
        slots.pointee.pageListsForFastPath = open ? slots.pointee.pageLists : nil
        slots.pointee.objectCachesForFastPath = open ? slots.pointee.objectCaches : cmm_empty_object_caches_record()
    }
}

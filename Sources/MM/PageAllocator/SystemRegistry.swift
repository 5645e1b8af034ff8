// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Synchronization

/// The live systems of the process, by identifier. It lets a thread return
/// its cached blocks and objects to a system safely: a thread that exits (or switches to
/// another system) looks its system up here, and a system that is being
/// dropped removes itself first, so blocks of a dead system are simply
/// forgotten instead of written into unmapped memory.
final class SystemRegistry: Sendable {
    static let shared = SystemRegistry()

    /// A live system's layers that threads' caches return memory to.
    private struct Entry: Sendable {
        let core: PageAllocator
        let slab: SlabAllocator
        /// Clears the system's records of threads that do not exist in a forked child.
        let repairAfterFork: @Sendable () -> Void
    }
    private let systems = Locked<[UInt64: Entry]>([:])
    private let nextID = Atomic<UInt64>(1)

    func register(_ core: PageAllocator, slab: SlabAllocator, repairAfterFork: @escaping @Sendable () -> Void) {
        ForkGate.install()
        systems.withLock { $0[core.systemID] = Entry(core: core, slab: slab, repairAfterFork: repairAfterFork) }
    }

    func allCores() -> [PageAllocator] { systems.withLock { $0.values.map(\.core) } }

    func makeID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    /// Removes a system that is being dropped and releases the per-thread
    /// state that every thread (alive or not) holds for it: page lists are
    /// emptied (their blocks die with the arena) and magazine stacks freed.
    /// Done under the registry lock, which is also the lock under which an
    /// owner thread detaches its own state, so the two never race. No thread
    /// may be inside the system itself (it has no references left).
    func remove(_ core: PageAllocator, slab: SlabAllocator) {
        let removed = systems.withLock { systems -> Entry? in
            let entry = systems.removeValue(forKey: core.systemID)
            core.attachedLists.withLock { attached in
                for handle in attached where PerThreadPageLists(base: handle.base).systemID == core.systemID {
                    PerThreadPageLists(base: handle.base).forget()
                }
                attached.removeAll()
            }
            slab.attached.withLock { attached in
                for magazines in attached where magazines.systemID == core.systemID {
                    magazines.forget(below: slab.cacheCount)
                }
                attached.removeAll()
            }
            return entry
        }
        // The layers are released outside the lock.
        _ = removed
    }

    /// Returns every block in `lists` to the system they belong to (if it is
    /// still alive) and leaves the lists attached to none. Owner thread only.
    ///
    /// Under the registry lock the lists leave their system's attached set,
    /// so a system dropped meanwhile no longer sees them; the blocks go back
    /// outside the lock (returning them may take other locks and even
    /// re-enter the registry for this thread's other per-thread state).
    func detach(_ lists: PerThreadPageLists) {
        let core = systems.withLock { systems -> PageAllocator? in
            guard lists.systemID != 0, let core = systems[lists.systemID]?.core else { return nil }
            core.attachedLists.withLock { _ = $0.remove(ListsHandle(base: lists.base)) }
            return core
        }
        core?.detach(lists)
        lists.forget()
    }

    /// Returns the objects in `magazines` to their system (if it is still
    /// alive; a dropped system's objects are forgotten) and leaves them
    /// attached to none, their stacks freed. Owner thread only; the same
    /// hand-over as for page lists.
    func detach(_ magazines: ObjectMagazines) {
        let slab = systems.withLock { systems -> SlabAllocator? in
            guard magazines.systemID != 0, let slab = systems[magazines.systemID]?.slab else { return nil }
            slab.attached.withLock { _ = $0.remove(magazines) }
            return slab
        }
        slab?.detach(magazines)
        magazines.forget(below: maxObjectCaches)
    }
}

extension SystemRegistry {
    /// Sends an event that belongs to no single system (scope-token misuse)
    /// to every live system's sinks.
    func broadcast(_ event: MemoryEvent) {
        let all = allCores()
        for core in all { core.events.emit(event) }
    }
}

extension SystemRegistry {
    /// Re-evaluates every live system's fast-path threshold (a charging
    /// scope started or the last one ended).
    func refreshFastPaths() {
        for core in allCores() { core.refreshFastPath() }
    }
}

extension SystemRegistry {
    /// In a forked child (the `pthread_atfork` child handler, once the fork
    /// gate is open again): only the forking thread exists. Every other
    /// thread's cached blocks and objects go back to their system, and their
    /// records are freed; then each system clears what those threads were
    /// doing (waiting, stalling, shrinking, killing).
    func repairAfterFork() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        let myLists = slots.pointee.pageLists
        let myMagazines = slots.pointee.objectCaches
        let entries = systems.withLock { Array($0.values) }
        for entry in entries {
            // detach returns the contents and takes the record out of the attached set.
            for handle in entry.core.withAttached({ Array($0) }) where handle.base != myLists {
                entry.core.detach(PerThreadPageLists(base: handle.base))
                handle.base.deallocate()
            }
            for magazines in entry.slab.attached.withLock({ Array($0) }) where magazines.base != myMagazines {
                entry.slab.detach(magazines)
                ObjectMagazines.unmapRecords(magazines)
            }
            entry.repairAfterFork()
        }
    }
}

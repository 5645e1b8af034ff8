// SPDX-License-Identifier: Apache-2.0
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
        let core: PageAllocatorCore
        let slab: SlabAllocator
    }
    private let systems = Locked<[UInt64: Entry]>([:])
    private let nextID = Atomic<UInt64>(1)

    func register(_ core: PageAllocatorCore, slab: SlabAllocator) {
        systems.withLock { $0[core.systemID] = Entry(core: core, slab: slab) }
    }

    func allCores() -> [PageAllocatorCore] { systems.withLock { $0.values.map(\.core) } }

    func makeID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    func remove(_ id: UInt64) {
        // The core is released outside the lock: its deinit unmaps the arena.
        let removed = systems.withLock { $0.removeValue(forKey: id) }
        _ = removed
    }

    /// Returns every block in `lists` to the system they belong to (if it is
    /// still alive) and leaves the lists attached to none.
    func detach(_ lists: PerThreadPageLists) {
        let id = lists.systemID
        guard id != 0 else { return }
        let core = systems.withLock { $0[id]?.core }
        if let core {
            core.detach(lists)
        } else {
            for order in 0..<perThreadOrderCount { lists.count(order).pointee.store(0, ordering: .relaxed) }
        }
        lists.systemID = 0
    }

    /// Returns the objects in `magazines` to their system (if it is still
    /// alive; a dropped system's objects are forgotten) and leaves them
    /// attached to none, their stacks freed.
    func detach(_ magazines: ObjectMagazines) {
        let id = magazines.systemID
        guard id != 0 else { return }
        if let slab = systems.withLock({ $0[id]?.slab }) {
            slab.detach(magazines)
        } else {
            for index in magazines.usedIndices(below: maxObjectCaches) {
                magazines.freeStack(index)
            }
        }
        magazines.systemID = 0
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

// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// The live systems of the process, by identifier. It lets a thread return
/// its cached blocks to a system safely: a thread that exits (or switches to
/// another system) looks its system up here, and a system that is being
/// dropped removes itself first, so blocks of a dead system are simply
/// forgotten instead of written into unmapped memory.
final class SystemRegistry: Sendable {
    static let shared = SystemRegistry()

    private let systems = Locked<[UInt64: PageAllocatorCore]>([:])
    private let nextID = Atomic<UInt64>(1)

    func register(_ core: PageAllocatorCore) {
        systems.withLock { $0[core.systemID] = core }
    }

    func allCores() -> [PageAllocatorCore] { systems.withLock { Array($0.values) } }

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
        let core = systems.withLock { $0[id] }
        if let core {
            core.detach(lists)
        } else {
            for order in 0..<perThreadOrderCount { lists.count(order).pointee.store(0, ordering: .relaxed) }
        }
        lists.systemID = 0
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

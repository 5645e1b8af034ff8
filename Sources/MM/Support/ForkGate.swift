// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Synchronization

/// Makes `fork()` safe for swift-mm: the child gets a private copy-on-write
/// snapshot of every allocation (all mappings are `MAP_PRIVATE`) and finds
/// no allocator lock held by a thread that does not exist in it.
///
/// How: every `Locked` section is entered inside a read hold of one
/// process-wide, writer-preferring reader-writer lock, the *gate* (a thread
/// takes it once, on entering its outermost section). The `pthread_atfork`
/// handlers then
/// - *prepare*: take the gate for writing: fork waits until no other thread
///   is inside any allocator lock, and no thread enters one;
/// - *parent*: release it;
/// - *child*: re-initialise it (the child's thread has a new thread id, so it
///   cannot unlock the parent's hold), then let every live system repair
///   what the vanished threads left: their cached pages and objects come
///   back, waiter counts and in-progress flags are cleared, the background
///   reclaimer starts again on first use, and condition variables are
///   re-initialised.
///
/// Kernel analogue: none in the kernel; in user space, glibc malloc's
/// `__malloc_fork_lock_parent`/`_unlock_child` and jemalloc's
/// `jemalloc_prefork`/`postfork_child`.
enum ForkGate {
    /// Enters an allocator lock's section (outermost one: read-locks the gate).
    @inline(__always)
    static func enter() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        if slots.pointee.forkGateDepth == 0 {
            cmm_fork_gate_read_lock()
            slots.pointee.forkGateDepth = 1
            ThreadSlots.refreshMallocSlot(slots)  // closes the malloc magazines while a lock is held
        } else {
            slots.pointee.forkGateDepth &+= 1
        }
    }

    /// Leaves it (outermost one: releases the gate).
    @inline(__always)
    static func leave() {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        slots.pointee.forkGateDepth &-= 1
        if slots.pointee.forkGateDepth == 0 {
            cmm_fork_gate_read_unlock()
            ThreadSlots.refreshMallocSlot(slots)
        }
    }

    /// Counts the forks this process descends from (0 in the original
    /// process): objects that own threads compare it with the value at the
    /// time they started them.
    static var generation: Int { forkGeneration.load(ordering: .acquiring) }

    /// Installs the handlers, once per process (idempotent).
    static func install() {
        _ = installed
    }

    /// Work the child handler does after re-opening the gate, in the order
    /// of `stage` then registration: layers return what vanished threads
    /// cached (stage 0: objects first, whose slabs go back to pages; stage 1:
    /// pages), then each system clears what those threads were doing (stage 2).
    static func addChildRepair(id: UInt64, stage: Int, _ repair: @escaping @Sendable () -> Void) {
        install()
        childRepairs.withLock { $0.append((id, stage, repair)) }
    }

    /// Forgets the repairs registered under `id` (a system being dropped).
    static func removeChildRepairs(id: UInt64) {
        childRepairs.withLock { $0.removeAll { $0.id == id } }
    }

    private static let childRepairs = Locked<[(id: UInt64, stage: Int, repair: @Sendable () -> Void)]>([])

    private static let installed: Bool = {
        let rc = pthread_atfork(
            {
                // A fork from inside an allocator lock's section (say, from an event sink
                // or shrinker the allocator calls with a lock held) would wait for itself.
                precondition(cmm_thread_slots_get().pointee.forkGateDepth == 0,
                             "swift-mm: fork() called while this thread is inside an allocator lock")
                cmm_fork_gate_write_lock()
            },
            { cmm_fork_gate_write_unlock() },
            {
                cmm_fork_gate_reinit()
                forkGeneration.wrappingAdd(1, ordering: .releasing)
                ConditionLock.reinitializeAllAfterFork()
                let repairs = childRepairs.withLock { $0 }.enumerated()
                    .sorted { ($0.element.stage, $0.offset) < ($1.element.stage, $1.offset) }
                for (_, entry) in repairs { entry.repair() }
            })
        precondition(rc == 0, "swift-mm: pthread_atfork failed: \(rc)")
        return true
    }()
}

private let forkGeneration = Atomic<Int>(0)

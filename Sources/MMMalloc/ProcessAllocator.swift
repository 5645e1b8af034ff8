// SPDX-License-Identifier: Apache-2.0
import CMMMalloc
import CMMShims
import Glibc
@_spi(ProcessAllocator) @_exported import MM
import Synchronization

/// The process-wide system behind `malloc`: created just before the
/// program's `main` runs (`start()`, called by the `__libc_start_main`
/// wrapper), configured from the environment (see `ProcessConfiguration`),
/// never dropped. Never inside an allocation: creating it runs ordinary
/// Swift (arrays, strings, generic metadata), and an allocation may come
/// from the Swift runtime while it holds one of its locks — the first
/// `malloc` of a Swift program, made under the runtime's once for
/// prespecialised `Array<UInt8>` metadata, would wait for itself forever.
///
/// Re-entrancy: while a thread runs inside the allocator (`mallocDepth`) or
/// holds one of swift-mm's locks (`forkGateDepth`), its allocations — made by
/// swift-mm's own Swift code, the runtime, a `swift_once`, metadata
/// instantiation — go to glibc's allocator instead of re-entering swift-mm;
/// so do the allocations made before the system exists (the dynamic loader,
/// libc, the Swift runtime's start-up). Every pointer is freed by the
/// allocator that made it: swift-mm's lie in its arena or vmalloc region.
enum ProcessAllocator {
    private static let state = Atomic<Int>(0)  // 0: not yet, 1: initialising, 2: ready, 3: failed
    nonisolated(unsafe) private static var system: Unmanaged<MemorySystem>?  // written once before state 2
    nonisolated(unsafe) private static var fastPath: _MagazineFastPath?  // written once before state 2
    /// The policy of `malloc` (`MM_POLICY`): made from a C global on every
    /// call, so that the allocation path never runs a Swift lazy initialiser.
    static var policy: AllocationPolicy {
        @inline(__always) get {
            switch cmm_policy_kind() {
            case 1: .failFast
            case 2: .retryWhileProgress
            case 3: .nonBlocking
            default: .standard
            }
        }
    }

    /// The system, if it is ready (from just before `main` on; never created
    /// on an allocation path).
    @inline(__always)
    static var existing: Unmanaged<MemorySystem>? {
        state.load(ordering: .acquiring) == 2 ? system : nil
    }

    /// The system's magazine fast paths, if it is ready.
    @inline(__always)
    static var existingFastPath: _MagazineFastPath? {
        state.load(ordering: .acquiring) == 2 ? fastPath : nil
    }

    /// Whether the system is ready (`existing` is not nil).
    @inline(__always)
    static var isReady: Bool { state.load(ordering: .acquiring) == 2 }

    /// Whether `malloc` and `free` try the magazines first: malloc
    /// magazines were turned on, which happens once the fast path is in place
    /// and only when `MM_HARDENING=full` is off (guarded blocks take their
    /// own path). One load, as `isReady`.
    @inline(__always)
    static var magazinesFirst: Bool { cmm_malloc_magazines_key() != 0 }

    /// The system's magazine fast paths; only once `isReady` (they are set
    /// before it is published, so this needs no test of its own).
    @inline(__always)
    static var readyFastPath: _MagazineFastPath { fastPath.unsafelyUnwrapped }

    /// Creates the system (once): called before `main`, on the main thread,
    /// with `mallocDepth` set, so that its own allocations go to glibc.
    @inline(never)
    @discardableResult
    static func start() -> Unmanaged<MemorySystem>? {
        guard state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged else {
            return state.load(ordering: .acquiring) == 2 ? system : nil
        }
        let settings = ProcessConfiguration.fromEnvironment()
        do {
            let mm = try MemorySystem(settings.configuration)
            cmm_set_policy_kind(settings.policyKind)
            if settings.guarded {
                var random = SystemRandomNumberGenerator()
                GuardedAllocation.turnOn(secret: UInt(random.next() as UInt64) | 1)
                atexit { mmProcessQuarantineFlush() }
            }
            system = Unmanaged.passRetained(mm)
            fastPath = mm._magazineFastPath
            MemorySystem._installProcessSystem(mm)
            // Under MM_HARDENING=full every malloc is guarded: its blocks come from the
            // magazines through the ordinary slot, and the malloc slot stays closed.
            if !settings.guarded { mm._magazineFastPath.turnOnForMalloc() }
            if settings.statsAtExit { atexit { ProcessAllocator.printStatistics() } }
            state.store(2, ordering: .releasing)
            return system
        } catch {
            writeError("libmmmalloc: cannot create the process's memory system (\(error)); glibc's allocator serves this process")
            state.store(3, ordering: .releasing)
            return nil
        }
    }

    /// `MM_STATS=exit`: meminfo, slabinfo and vmstat to standard error.
    static func printStatistics() {
        guard let mm = existing else { return }
        _ProcessAllocatorThread.enter()
        defer { _ProcessAllocatorThread.leave() }
        let s = mm.takeUnretainedValue().statistics()
        writeError("libmmmalloc statistics at exit\n" + s.meminfo + s.slabinfo + s.vmstat)
    }

    static func writeError(_ text: String) {
        var line = text
        if !line.hasSuffix("\n") { line += "\n" }
        line.withCString { _ = Glibc.write(2, $0, strlen($0)) }
    }
}

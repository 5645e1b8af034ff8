// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Opens and closes the lock-free fast paths of one system. The page fast
/// path serves requests while free pages are above `pageThreshold`, a word
/// it reads; closing sets that to `Int.max`. The object fast path serves a
/// thread while its magazines' fast-path key is the system's identifier:
/// the slab layer observes the gate and writes that key into every attached
/// thread's magazines (0 while closed). Either way a closed gate costs the
/// fast paths nothing extra.
///
/// The gate is closed while something must see every request: fault
/// injection (configured, or armed on some thread), allocation profiling, or
/// a closure charging scope active anywhere (scopes are read on slow paths
/// only, and tasks inherit closure scopes). A thread-only charging scope (a
/// token, `withThreadAllocationScope`) closes its own thread's fast-path
/// slots instead and leaves the gate open (`ThreadSlots`).
@usableFromInline
final class FastPathGate: @unchecked Sendable {  // two words behind stable pointers, written with atomics
    /// Free pages above which the page fast path serves requests.
    @usableFromInline let pageThreshold: UnsafeMutablePointer<Atomic<Int>>
    private let objectPathOpen = Atomic<Bool>(true)
    /// Runs after every change, outside any lock of the gate (the slab layer's copy into the magazines).
    private let objectPathObserver = Mutex<(@Sendable () -> Void)?>(nil)
    private let low: Atomic<Int>
    private let holds = Atomic<Int>(0)
    private let charging = Atomic<Bool>(false)

    init(low: Int) {
        self.low = Atomic(low)
        pageThreshold = .allocate(capacity: 1)
        pageThreshold.initialize(to: Atomic(low))
    }

    deinit {
        pageThreshold.deinitialize(count: 1)
        pageThreshold.deallocate()
    }

    /// Whether the fast paths are open (what the slab layer copies into the magazines).
    var isObjectPathOpen: Bool { objectPathOpen.load(ordering: .relaxed) }

    /// Sets the function that runs after every change of the gate.
    func setObjectPathObserver(_ observer: @escaping @Sendable () -> Void) {
        objectPathObserver.withLock { $0 = observer }
        observer()
    }

    /// Sets the number of reasons to keep the gate closed (fault injection
    /// configured or armed, profiling); 0 opens it unless charging is active.
    func setHolds(_ n: Int) {
        holds.store(n, ordering: .relaxed)
        refresh()
    }

    /// A charging scope became active somewhere, or the last one ended.
    func setChargingActive(_ active: Bool) {
        charging.store(active, ordering: .relaxed)
        refresh()
    }

    /// The `low` watermark moved (the process limit changed).
    func setLow(_ pages: Int) {
        low.store(pages, ordering: .relaxed)
        refresh()
    }

    private func refresh() {
        let closed = holds.load(ordering: .relaxed) > 0 || charging.load(ordering: .relaxed)
        pageThreshold.pointee.store(closed ? Int.max : low.load(ordering: .relaxed), ordering: .relaxed)
        objectPathOpen.store(!closed, ordering: .relaxed)
        objectPathObserver.withLock { $0 }?()
    }
}

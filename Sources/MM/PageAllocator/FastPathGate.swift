// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Opens and closes the lock-free fast paths of one system. Both fast paths
/// read one word of it: the page fast path serves requests while free pages
/// are above `pageThreshold`, the object fast path while the calling
/// thread's magazines are attached to `objectKey`. Closing sets the
/// threshold to `Int.max` and the key to `closedKey`, which no magazine is
/// ever attached to, so a closed gate costs the fast paths nothing extra.
///
/// The gate is closed while something must see every request: fault
/// injection (configured, or armed on some thread), allocation profiling, or
/// a charging scope active anywhere (scopes are read on slow paths only).
@usableFromInline
final class FastPathGate: @unchecked Sendable {  // two words behind stable pointers, written with atomics
    /// The object key of a closed gate: no system has this identifier.
    @usableFromInline static let closedKey = UInt64.max

    /// Free pages above which the page fast path serves requests.
    @usableFromInline let pageThreshold: UnsafeMutablePointer<Atomic<Int>>
    /// The identifier magazines must be attached to for the object fast path.
    @usableFromInline let objectKey: UnsafeMutablePointer<Atomic<UInt64>>
    private let systemID: UInt64
    private let low: Atomic<Int>
    private let holds = Atomic<Int>(0)
    private let charging = Atomic<Bool>(false)

    init(systemID: UInt64, low: Int) {
        self.systemID = systemID
        self.low = Atomic(low)
        pageThreshold = .allocate(capacity: 1)
        pageThreshold.initialize(to: Atomic(low))
        objectKey = .allocate(capacity: 1)
        objectKey.initialize(to: Atomic(systemID))
    }

    deinit {
        pageThreshold.deinitialize(count: 1)
        pageThreshold.deallocate()
        objectKey.deinitialize(count: 1)
        objectKey.deallocate()
    }

    /// Whether the fast paths are open.
    var isOpen: Bool { objectKey.pointee.load(ordering: .relaxed) == systemID }

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
        objectKey.pointee.store(closed ? Self.closedKey : systemID, ordering: .relaxed)
    }
}

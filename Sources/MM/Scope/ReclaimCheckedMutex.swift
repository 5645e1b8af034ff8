// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// A mutex that the reclaim-recursion checker knows about.
///
/// Use it for locks that shrinkers take. The checker learns, each time a
/// shrinker of domain D takes the lock, that D's reclaim needs it (or you
/// declare it with `takenByReclaimIn:`); from then on an allocation that may
/// reclaim D while the thread holds the lock is reported as
/// `reclaimRecursion` with both call sites and the scope that fixes it —
/// at the allocation, with plenty of free memory — and reclaim on such a
/// thread skips D's shrinkers instead of deadlocking.
/// Kernel analogue: a lock annotated for lockdep's `fs_reclaim` tracking.
///
/// ```swift
/// let journal = ReclaimCheckedMutex(Journal(), name: "journal", takenByReclaimIn: .filesystem)
/// journal.withLock { j in
///     withAllocationScope(.excluding(.filesystem)) { j.append(mm.allocateGuaranteed(byteCount: 4096)) }
/// }
/// ```
public struct ReclaimCheckedMutex<Value: Sendable>: ~Copyable, Sendable {
    private let box: MutexStorage<Value>
    private let lockClass: Int
    private let instance: UInt64
    /// The lock's name (its lock class: locks with the same name share what was learned).
    public let name: String

    /// A lock around `value`. `domain`: a reclaim domain whose shrinkers are
    /// known to take this lock (the checker also learns it).
    public init(_ value: sending Value, name: String, takenByReclaimIn domain: ReclaimDomain? = nil) {
        box = MutexStorage(value)
        self.name = name
        lockClass = ReclaimRecursionChecker.shared.lockClass(named: name, declared: domain)
        instance = checkedMutexInstances.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Runs `body` with the lock held. Taking a lock this thread already holds
    /// inside reclaim is reported and stops the process with the report.
    public func withLock<R, E: Error>(file: StaticString = #fileID, line: UInt = #line,
                                      _ body: (inout sending Value) throws(E) -> sending R) throws(E) -> sending R {
        ReclaimRecursionChecker.shared.willLock(instance: instance, lockClass: lockClass, name: name,
                                                site: CallSite(file, line))
        defer { ReclaimRecursionChecker.shared.didUnlock(instance: instance) }
        box.lock()
        defer { box.unlock() }
        return try body(&box.value.pointee)
    }

    /// Runs `body` with the lock held if it is free now; returns nil without
    /// waiting if it is not. Shrinkers use this to answer `.stop` instead of
    /// blocking on a lock an allocating thread holds.
    public func withLockIfAvailable<R, E: Error>(file: StaticString = #fileID, line: UInt = #line,
                                                 _ body: (inout sending Value) throws(E) -> sending R) throws(E) -> sending R? {
        guard box.tryLock() else { return nil }
        defer { box.unlock() }
        let checker = ReclaimRecursionChecker.shared
        checker.willLock(instance: instance, lockClass: lockClass, name: name, site: CallSite(file, line))
        defer { checker.didUnlock(instance: instance) }
        return try body(&box.value.pointee)
    }
}

private let checkedMutexInstances = Atomic<UInt64>(0)

// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Synchronization

/// Payload of `MemoryEvent.reclaimRecursion`.
public struct ReclaimRecursion: Sendable, CustomStringConvertible {
    /// The lock involved.
    public var lock: String
    /// Where the thread took it.
    public var lockSite: CallSite
    /// The reclaim domain whose shrinkers take that lock.
    public var domain: String
    /// The allocation that may enter that reclaim while the lock is held (nil
    /// when it was caught inside reclaim itself).
    public var allocationSite: CallSite?
    /// The shrinker that needed the lock, when known.
    public var shrinker: String?
    /// The scope that would make it safe.
    public var fix: String

    /// A one-line description, as events and reports print it.
    public var description: String {
        var s = "reclaim recursion: lock \"\(lock)\" (taken at \(lockSite)) is taken by \(domain) reclaim"
        if let shrinker { s += " (shrinker \(shrinker))" }
        if let allocationSite { s += ", and the allocation at \(allocationSite) may reclaim \(domain) while holding it" }
        else { s += ", and reclaim running on this thread needs it" }
        return s + "; fix: \(fix)"
    }
}

/// Learns which locks are taken inside shrinkers of each reclaim domain, and
/// reports an allocation that may reclaim a domain while its thread holds
/// such a lock — at the allocation, whether or not memory is short.
/// Kernel analogue: lockdep's `fs_reclaim` map and `might_alloc()`.
final class ReclaimRecursionChecker: Sendable {
    static let shared = ReclaimRecursionChecker()

    struct LockClass: Sendable {
        let name: String
        /// Domains whose reclaim takes this lock: declared | learned.
        var domains: UInt64
        var shrinkers: Set<String> = []
    }

    private let classes = Locked<(byName: [String: Int], list: [LockClass])>(([:], []))
    private let reported = Locked<Set<String>>([])

    func lockClass(named name: String, declared domain: ReclaimDomain?) -> Int {
        classes.withLock { state in
            if let id = state.byName[name] {
                if let domain { state.list[id].domains |= 1 << UInt64(domain.index) }
                return id
            }
            let id = state.list.count
            state.list.append(LockClass(name: name, domains: domain.map { 1 << UInt64($0.index) } ?? 0))
            state.byName[name] = id
            return id
        }
    }

    func domains(of lockClass: Int) -> LockClass { classes.withLock { $0.list[lockClass] } }

    // MARK: Thread state

    /// The calling thread's held checked locks and the shrinker it runs, if any.
    final class ThreadLocks {
        var held: [(instance: UInt64, lockClass: Int, site: CallSite)] = []
        var shrinkers: [(name: String, domain: ReclaimDomain?)] = []
        /// Shrinkers that timed out on a helper while this thread held its
        /// current locks; skipped until it holds none.
        var suspected: Set<String> = []
    }

    static var threadLocks: ThreadLocks {
        if let raw = cmm_thread_slots_get().pointee.lockState {
            return Unmanaged<ThreadLocks>.fromOpaque(raw).takeUnretainedValue()
        }
        let state = ThreadLocks()
        let raw = Unmanaged.passRetained(state).toOpaque()
        cmm_thread_slots_get().pointee.lockState = raw
        pthread_setspecific(exitKey.key, raw)
        return state
    }

    static let exitKey = ThreadExitKey { raw in
        guard let raw else { return }
        if cmm_thread_slots_get().pointee.lockState == raw { cmm_thread_slots_get().pointee.lockState = nil }
        Unmanaged<ThreadLocks>.fromOpaque(raw).release()
    }

    /// Runs a shrinker callback, marking the thread as inside it.
    func runningShrinker<R>(named name: String, domain: ReclaimDomain?, _ body: () -> R) -> R {
        let locks = ReclaimRecursionChecker.threadLocks
        locks.shrinkers.append((name, domain))
        defer { locks.shrinkers.removeLast() }
        return body()
    }

    /// Called by `ReclaimCheckedMutex` before it locks.
    func willLock(instance: UInt64, lockClass: Int, name: String, site: CallSite) {
        let locks = ReclaimRecursionChecker.threadLocks
        if let (shrinker, domain) = locks.shrinkers.last {
            if let domain {
                classes.withLock { state in
                    state.list[lockClass].domains |= 1 << UInt64(domain.index)
                    state.list[lockClass].shrinkers.insert(shrinker)
                }
            }
            if let held = locks.held.first(where: { $0.instance == instance }) {
                let report = ReclaimRecursion(
                    lock: name, lockSite: held.site, domain: domain?.name ?? "any", allocationSite: nil, shrinker: shrinker,
                    fix: "declare the lock with takenByReclaimIn: \(domain.map { ".\($0.name)" } ?? "its domain") so that reclaim skips this shrinker on threads holding it, and allocate under .excluding(\(domain?.name ?? "…")) while holding it")
                EventHub.broadcast(.reclaimRecursion(report))
                fatalError("swift-mm: \(report.description)")
            }
        }
        locks.held.append((instance, lockClass, site))
        cmm_thread_slots_get().pointee.heldCheckedLocks &+= 1
        ThreadSlots.refreshFastPathSlots()
    }

    func didUnlock(instance: UInt64) {
        let locks = ReclaimRecursionChecker.threadLocks
        if let i = locks.held.lastIndex(where: { $0.instance == instance }) { locks.held.remove(at: i) }
        cmm_thread_slots_get().pointee.heldCheckedLocks &-= 1
        ThreadSlots.refreshFastPathSlots()
        if locks.held.isEmpty { locks.suspected.removeAll() }
    }

    // MARK: Checks

    /// Reports every held lock that reclaim on behalf of `context` could
    /// need (once per lock and allocation site). Called on allocations made
    /// while the thread holds a checked lock.
    func checkAllocation(_ context: AllocationContext, events: EventHub) {
        guard context.directReclaim else { return }  // it cannot enter reclaim itself
        let locks = ReclaimRecursionChecker.threadLocks
        for held in locks.held {
            let lockClass = domains(of: held.lockClass)
            // A domain defined within an excluded one is excluded too.
            let risky = DomainRegistry.shared.notExcluded(lockClass.domains, by: context.scope.excluded)
            guard risky != 0 else { continue }
            // The outermost domain is the one to exclude.
            let names = DomainRegistry.shared.names(in: risky)
            let key = "\(held.lockClass)@\(context.site?.description ?? "?")"
            guard reported.withLock({ $0.insert(key).inserted }) else { continue }
            events.emit(.reclaimRecursion(ReclaimRecursion(
                lock: lockClass.name, lockSite: held.site, domain: names.joined(separator: ","),
                allocationSite: context.site, shrinker: lockClass.shrinkers.sorted().first,
                fix: "allocate inside withAllocationScope(.excluding(\(names.map { ".\($0)" }.joined(separator: ", ")))) while holding \"\(lockClass.name)\"")))
        }
    }

    /// A shrinker run on a helper thread (because the reclaiming thread holds
    /// checked locks it might need) did not finish in time: most likely it
    /// waits for one of them. Reported once per shrinker and lock set.
    func reportPossibleSelfDeadlock(shrinker: String, domain: ReclaimDomain?, context: AllocationContext?,
                                    waited: Duration, events: EventHub) {
        let locks = ReclaimRecursionChecker.threadLocks
        locks.suspected.insert(shrinker)
        let held = locks.held.map { (domains(of: $0.lockClass).name, $0.site) }
        let names = held.map(\.0)
        guard reported.withLock({ $0.insert("helper:\(shrinker):\(names.joined(separator: ","))").inserted }) else { return }
        let domainName = domain?.name ?? "its domain"
        events.emit(.reclaimRecursion(ReclaimRecursion(
            lock: names.joined(separator: ", "), lockSite: held.first?.1 ?? CallSite("?", 0),
            domain: domain?.name ?? "any", allocationSite: context?.site, shrinker: shrinker,
            fix: "the shrinker did not finish within \(waited) while this thread held these locks, and was left to finish on a helper thread; declare the lock it needs with takenByReclaimIn: .\(domainName) (reclaim then skips the shrinker here) and allocate inside withAllocationScope(.excluding(.\(domainName))) while holding it")))
    }

    /// Whether `shrinker` timed out on a helper while this thread held its current locks.
    func isSuspected(_ shrinker: String) -> Bool {
        ReclaimRecursionChecker.threadLocks.suspected.contains(shrinker)
    }

    /// Whether the calling thread holds a lock that shrinkers of `domain`
    /// take; if so it is reported and the shrinker must be skipped.
    func threadHoldsLock(takenByReclaimIn domain: ReclaimDomain, shrinker: String, context: AllocationContext?,
                         events: EventHub) -> Bool {
        guard cmm_thread_slots_get().pointee.heldCheckedLocks > 0 else { return false }
        let locks = ReclaimRecursionChecker.threadLocks
        for held in locks.held {
            let lockClass = domains(of: held.lockClass)
            guard lockClass.domains & domain.ancestry != 0 else { continue }
            let key = "skip:\(held.lockClass):\(shrinker)"
            if reported.withLock({ $0.insert(key).inserted }) {
                events.emit(.reclaimRecursion(ReclaimRecursion(
                    lock: lockClass.name, lockSite: held.site, domain: domain.name, allocationSite: context?.site,
                    shrinker: shrinker,
                    fix: "allocate inside withAllocationScope(.excluding(.\(domain.name))) while holding \"\(lockClass.name)\"; the shrinker was skipped instead of deadlocking")))
            }
            return true
        }
        return false
    }
}

// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Synchronization

/// Where scopes live.
///
/// - Closure scopes are bound in a `TaskLocal`, so `Task {}`, child tasks and
///   `async let` inherit them and `Task.detached` does not; outside any task
///   the TaskLocal's thread fallback makes them per thread.
/// - While a synchronous closure scope runs, the thread also keeps the
///   combined value on its own stack: the body cannot suspend, so nested
///   synchronous scopes read their parent there instead of paying for a
///   TaskLocal read (only the outermost one reads the TaskLocal).
/// - Tokens (`AllocationScope.enter`) are thread-bound and live on a
///   per-thread stack with their cumulative value.
///
/// All of it is read only on allocation slow paths.
/// Closure charging scopes (`withAllocationScope(.charging(g))`, bound in a
/// `TaskLocal` that tasks inherit) entered anywhere and not yet left. While
/// any is active every system's fast path steps aside, so that every
/// allocation is charged: the fast path cannot read scopes itself, and a task
/// that inherited the scope may run on any thread. Thread-only charging
/// scopes (tokens, `withThreadAllocationScope`) close their own thread's fast
/// paths instead (`ThreadSlots.enteredThreadChargingScope`). Only the first entry
/// and the last exit call the observers (each system's gate, registered by
/// `MemorySystem`), under the lock, so they see transitions in order.
@usableFromInline
enum ChargingScopes {
    private struct State: Sendable {
        var active = 0
        var observers: [UInt64: @Sendable (Bool) -> Void] = [:]
    }
    private static let state = Locked(State())

    static var isActive: Bool { state.withLock { $0.active > 0 } }

    /// Calls `observer` with the current state now and at every transition
    /// until `removeObserver(_:)`.
    static func addObserver(_ id: UInt64, _ observer: @escaping @Sendable (Bool) -> Void) {
        state.withLock { s in
            s.observers[id] = observer
            observer(s.active > 0)
        }
    }

    static func removeObserver(_ id: UInt64) {
        state.withLock { _ = $0.observers.removeValue(forKey: id) }
    }

    @usableFromInline
    static func entered() {
        state.withLock { s in
            s.active += 1
            if s.active == 1 { for observer in s.observers.values { observer(true) } }
        }
    }

    @usableFromInline
    static func exited() {
        state.withLock { s in
            s.active -= 1
            if s.active == 0 { for observer in s.observers.values { observer(false) } }
        }
    }
}

@usableFromInline
enum ScopeStorage {
    /// The closure scopes of the current task (or thread, outside tasks).
    @usableFromInline static let closureScopeKey = TaskLocal<AllocationScope>(wrappedValue: .none)

    static var closureScope: AllocationScope { closureScopeKey.get() }

    /// Enters a synchronous closure scope on this thread; returns the
    /// combined value to bind in the TaskLocal.
    @inlinable
    static func enterSync(_ scope: AllocationScope) -> AllocationScope {
        let state = ThreadScopeState.currentOrCreate()
        let outer = state.pointee.syncDepth > 0
            ? state.pointee.syncStack[state.pointee.syncDepth - 1]
            : closureScopeKey.get()
        let combined = outer.union(scope.entered())
        state.pointee.pushSync(combined)
        if scope.chargingGroup != 0 { ChargingScopes.entered() }
        return combined
    }

    /// Enters a thread-only closure scope (`withThreadAllocationScope`):
    /// only this thread observes it, so it needs no `TaskLocal`, and no read
    /// of one either: `current()` unions the thread's stack with the task's
    /// closure scope on the slow path.
    @inlinable
    static func enterThreadOnly(_ scope: AllocationScope) {
        let state = ThreadScopeState.currentOrCreate()
        let outer = state.pointee.syncDepth > 0 ? state.pointee.syncStack[state.pointee.syncDepth - 1] : .none
        state.pointee.pushSync(outer.union(scope.entered()))
        if scope.chargingGroup != 0 { ThreadSlots.enteredThreadChargingScope() }
    }

    /// Leaves the innermost synchronous closure scope of this thread.
    @inlinable
    static func exitSync(_ scope: AllocationScope) {
        ThreadScopeState.current.unsafelyUnwrapped.pointee.popSync()
        if scope.chargingGroup != 0 { ChargingScopes.exited() }
    }

    /// Leaves the innermost thread-only closure scope of this thread.
    @inlinable
    static func exitThreadOnly(_ scope: AllocationScope) {
        ThreadScopeState.current.unsafelyUnwrapped.pointee.popSync()
        if scope.chargingGroup != 0 { ThreadSlots.exitedThreadChargingScope() }
    }

    /// Orders guarantee and charging scopes across threads and tasks (R4).
    static let entryCounter = Atomic<UInt64>(0)
    static let threadSerials = Atomic<UInt64>(0)

    /// The effective scope of the current task and thread.
    static func current() -> AllocationScope {
        let state = ThreadScopeState.current
        // The task's closure scopes, with this thread's synchronous ones (which
        // include them when they were entered with the task's binding: a union
        // with itself changes nothing).
        var scope = closureScope
        if let state, state.pointee.syncDepth > 0 {
            scope = state.pointee.syncStack[state.pointee.syncDepth - 1].union(scope)
        }
        if let state, state.pointee.tokenDepth > 0 {
            scope = scope.union(state.pointee.tokens[state.pointee.tokenDepth - 1].cumulative)
        }
        return scope
    }
}

/// One entered token on a thread's stack.
@usableFromInline
struct TokenEntry {
    @usableFromInline var own: AllocationScope
    /// `own` combined with every token below it.
    @usableFromInline var cumulative: AllocationScope
    @usableFromInline var stamp: UInt64

    @usableFromInline
    init(own: AllocationScope, cumulative: AllocationScope, stamp: UInt64) {
        self.own = own; self.cumulative = cumulative; self.stamp = stamp
    }
}

/// A thread's scope stacks, reached through the `scopeState` C thread-local slot.
@usableFromInline
struct ThreadScopeState {
    @usableFromInline var serial: UInt64
    @usableFromInline var syncDepth = 0
    @usableFromInline var syncCapacity = 0
    @usableFromInline var syncStack: UnsafeMutablePointer<AllocationScope>
    @usableFromInline var tokenDepth = 0
    @usableFromInline var tokenCapacity = 0
    @usableFromInline var tokens: UnsafeMutablePointer<TokenEntry>
    @usableFromInline var nextStamp: UInt64 = 0
    /// Fault injection: fail the Nth allocation from now on this thread (0: off).
    var failNth = 0
    /// The system whose allocations `failNth` counts.
    var failNthSystem: UInt64 = 0
    /// Stack entries examined by token look-ups (lets a test prove they stay
    /// O(1) amortised at any depth without timing anything).
    @usableFromInline var tokenProbes = 0

    @inlinable @inline(__always)
    static var current: UnsafeMutablePointer<ThreadScopeState>? {
        cmm_thread_slots_get().pointee.scopeState?.assumingMemoryBound(to: ThreadScopeState.self)
    }

    @inlinable @inline(__always)
    static func currentOrCreate() -> UnsafeMutablePointer<ThreadScopeState> {
        if let state = current { return state }
        return create()
    }

    @usableFromInline
    static func create() -> UnsafeMutablePointer<ThreadScopeState> {
        let state = UnsafeMutablePointer<ThreadScopeState>.allocate(capacity: 1)
        state.initialize(to: ThreadScopeState(
            serial: ScopeStorage.threadSerials.wrappingAdd(1, ordering: .relaxed).newValue,
            syncCapacity: 8, syncStack: .allocate(capacity: 8),
            tokenCapacity: 8, tokens: .allocate(capacity: 8)))
        cmm_thread_slots_get().pointee.scopeState = UnsafeMutableRawPointer(state)
        pthread_setspecific(exitKey.key, state)
        return state
    }

    /// At thread exit: drop the stacks (tokens still entered die with the thread).
    static let exitKey = ThreadExitKey { raw in
        guard let raw else { return }
        let state = raw.assumingMemoryBound(to: ThreadScopeState.self)
        state.pointee.syncStack.deinitialize(count: state.pointee.syncDepth)
        state.pointee.syncStack.deallocate()
        state.pointee.tokens.deinitialize(count: state.pointee.tokenDepth)
        state.pointee.tokens.deallocate()
        if cmm_thread_slots_get().pointee.scopeState == raw { cmm_thread_slots_get().pointee.scopeState = nil }
        state.deinitialize(count: 1)
        state.deallocate()
    }

    @inlinable
    mutating func pushSync(_ scope: AllocationScope) {
        if syncDepth == syncCapacity { growSync() }
        (syncStack + syncDepth).initialize(to: scope)
        syncDepth &+= 1
    }

    @usableFromInline
    mutating func growSync() {
        ThreadScopeState.double(&syncStack, count: syncDepth, capacity: &syncCapacity)
    }

    /// Doubles a stack's storage, moving its `count` elements.
    static func double<Element>(_ stack: inout UnsafeMutablePointer<Element>, count: Int, capacity: inout Int) {
        let bigger = UnsafeMutablePointer<Element>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: stack, count: count)
        stack.deallocate()
        stack = bigger
        capacity *= 2
    }

    @inlinable
    mutating func popSync() {
        syncDepth &-= 1
    }

    @inlinable
    mutating func pushToken(_ scope: AllocationScope) -> UInt64 {
        if tokenDepth == tokenCapacity { growTokens() }
        if scope.chargingGroup != 0 { ThreadSlots.enteredThreadChargingScope() }
        nextStamp &+= 1
        let cumulative = tokenDepth > 0 ? tokens[tokenDepth &- 1].cumulative.union(scope) : scope
        (tokens + tokenDepth).initialize(to: TokenEntry(own: scope, cumulative: cumulative, stamp: nextStamp))
        tokenDepth &+= 1
        return nextStamp
    }

    @usableFromInline
    mutating func growTokens() {
        ThreadScopeState.double(&tokens, count: tokenDepth, capacity: &tokenCapacity)
    }

    /// Pops the top token if it has `stamp`.
    @inlinable @inline(__always)
    mutating func popTopToken(stamp: UInt64) -> Bool {
        guard tokenDepth > 0 && tokens[tokenDepth &- 1].stamp == stamp else { return false }
        tokenDepth &-= 1
        if tokens[tokenDepth].own.chargingGroup != 0 { ThreadSlots.exitedThreadChargingScope() }
        return true
    }

    /// Whether the token with `stamp` is above the top of this thread's stack
    /// (exited, or entered on no stack of this thread): the check of every
    /// token's end of life after a proper `exit()`, inlined into the token's
    /// `deinit` so that the common case needs no search. Stamps grow with
    /// every entry and removals keep the order, so a stamp above the top
    /// stamp is on no position of the stack.
    @inlinable @inline(__always)
    func isAboveTop(stamp: UInt64) -> Bool {
        tokenDepth == 0 || tokens[tokenDepth &- 1].stamp < stamp
    }

    /// Whether the token with `stamp` is still entered on this thread. O(1)
    /// for a token at or above the top (the case of every token's end of
    /// life after a proper `exit()`), O(log depth) otherwise: stamps grow
    /// with every entry and removals keep the order, so the stack is sorted.
    @usableFromInline
    mutating func holdsToken(stamp: UInt64) -> Bool {
        index(ofToken: stamp) != nil
    }

    /// The position of the token with `stamp` on the stack, by binary search.
    @usableFromInline
    mutating func index(ofToken stamp: UInt64) -> Int? {
        tokenProbes &+= 1
        guard tokenDepth > 0, stamp <= tokens[tokenDepth &- 1].stamp else { return nil }
        var low = 0, high = tokenDepth - 1
        while low <= high {
            tokenProbes &+= 1
            let middle = (low + high) / 2
            let s = tokens[middle].stamp
            if s == stamp { return middle }
            if s < stamp { low = middle + 1 } else { high = middle - 1 }
        }
        return nil
    }

    /// Removes the token with `stamp`; returns how far from the top it was
    /// (0: the top, as it should be), or nil if it is not on the stack.
    mutating func removeToken(stamp: UInt64) -> Int? {
        if popTopToken(stamp: stamp) { return 0 }
        guard let index = index(ofToken: stamp) else { return nil }
        if tokens[index].own.chargingGroup != 0 { ThreadSlots.exitedThreadChargingScope() }
        (tokens + index).deinitialize(count: 1)
        (tokens + index).moveInitialize(from: tokens + index + 1, count: tokenDepth - index - 1)
        tokenDepth -= 1
        for i in index..<tokenDepth {
            tokens[i].cumulative = i > 0 ? tokens[i - 1].cumulative.union(tokens[i].own) : tokens[i].own
        }
        return tokenDepth - index
    }
}

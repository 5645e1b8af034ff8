// SPDX-License-Identifier: Apache-2.0

/// Runs `body` with `scope` in force for every allocation it makes, on this
/// thread and in tasks created inside (`Task {}` inherits, `Task.detached`
/// does not). Restrictions of enclosing scopes stay in force (R1).
///
/// ```swift
/// try withAllocationScope(.excluding(.filesystem)) {   // memalloc_nofs_save
///     try journal.commit()
/// }
/// ```
@inlinable
public func withAllocationScope<R, E: Error>(_ scope: AllocationScope, _ body: () throws(E) -> R) throws(E) -> R {
    let combined = ScopeStorage.enterSync(scope)
    defer { ScopeStorage.exitSync(scope) }
    let result: Result<R, E> = ScopeStorage.closureScopeKey.withValue(combined) {
        Result { () throws(E) -> R in try body() }
    }
    return try result.get()
}

/// Runs the asynchronous `body` with `scope` in force; the scope follows the
/// task across suspension points and threads, and child tasks inherit it.
///
/// ```swift
/// await withAllocationScope(.retryForever) {            // the NOFAIL scope nobody had
///     await flushDirtyPages()
/// }
/// ```
public func withAllocationScope<R>(_ scope: AllocationScope, _ body: () async throws -> R) async rethrows -> R {
    let combined = ScopeStorage.closureScope.union(scope.entered())
    if scope.chargingGroup != 0 { ChargingScopes.entered() }
    defer { if scope.chargingGroup != 0 { ChargingScopes.exited() } }
    return try await ScopeStorage.closureScopeKey.withValue(combined) { try await body() }
}

/// Runs `body` with `scope` in force for the allocations this thread makes,
/// and for no one else: tasks started inside do not inherit it. This is
/// the kernel's `memalloc_nofs_save` exactly, and the cheap closure scope:
/// it needs no `TaskLocal` binding (`mmctl bench scopes`:
/// `closure_scope_thread_ns` against `closure_scope_ns` and the bare
/// `tasklocal_bind_ns` of the same run). Use it around synchronous work
/// that stays on its thread; use `withAllocationScope` when work inside may
/// move to tasks. Restrictions of every enclosing scope stay in force (R1).
///
/// ```swift
/// withThreadAllocationScope(.excluding(.filesystem)) {  // hot, synchronous, one thread
///     page.writeBack()
/// }
/// ```
@inlinable
public func withThreadAllocationScope<R, E: Error>(_ scope: AllocationScope, _ body: () throws(E) -> R) throws(E) -> R {
    ScopeStorage.enterThreadOnly(scope)
    defer { ScopeStorage.exitThreadOnly(scope) }
    return try body()
}


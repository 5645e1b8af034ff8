// SPDX-License-Identifier: Apache-2.0

/// A scope entered with `AllocationScope.enter` and left with `exit()`: for
/// a constraint that begins in one function and ends in another (a
/// transaction). Kernel analogue: the cookie of `memalloc_nofs_save`.
///
/// Tokens are thread-bound and must be exited in reverse order of entry.
/// The type is non-copyable, so a token has one owner; exiting it twice, on
/// another thread, out of order, or dropping it without `exit()` is a
/// programming error reported as an `invalidRequest` event to every live
/// `MemorySystem` (never a crash). A token exited out of order, or dropped
/// on its own thread, is removed; one exited on another thread stays in
/// force on its own thread, the safe direction for a restriction.
@frozen
public struct AllocationScopeToken: ~Copyable, Sendable {
    @usableFromInline let threadSerial: UInt64
    @usableFromInline let stamp: UInt64
    @usableFromInline let file: StaticString
    @usableFromInline let line: UInt

    @usableFromInline
    init(threadSerial: UInt64, stamp: UInt64, file: StaticString, line: UInt) {
        self.threadSerial = threadSerial; self.stamp = stamp; self.file = file; self.line = line
    }

    /// Leaves the scope. Kernel analogue: `memalloc_nofs_restore(cookie)`.
    ///
    /// `borrowing`, so that `defer { token.exit() }` works; exiting twice is
    /// reported, and the token's end of life after `exit()` is silent.
    /// - Parameters:
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    @inlinable
    public func exit(file: StaticString = #fileID, line: UInt = #line) {
        // The common case: the top of this thread's stack.
        if let state = ThreadScopeState.current, state.pointee.serial == threadSerial,
           state.pointee.popTopToken(stamp: stamp) {
            return
        }
        leave(dropped: false, exitFile: file, exitLine: line)
    }

    deinit {
        // Still entered on this thread: dropped without exit() (reported, removed).
        if let state = ThreadScopeState.current, state.pointee.serial == threadSerial,
           state.pointee.isAboveTop(stamp: stamp) || !state.pointee.holdsToken(stamp: stamp) {
            return
        }
        leave(dropped: true, exitFile: file, exitLine: line)
    }

    @usableFromInline
    func leave(dropped: Bool, exitFile: StaticString, exitLine: UInt) {
        func report(_ reason: String) {
            EventHub.broadcast(.invalidRequest(InvalidRequest(
                operation: "AllocationScopeToken.exit() (entered at \(CallSite(file, line)))", reason: reason,
                site: CallSite(exitFile, exitLine))))
        }
        guard let state = ThreadScopeState.current, state.pointee.serial == threadSerial else {
            report(dropped
                   ? "the token was dropped without exit() on another thread than the one that entered it; the scope stays in force on that thread"
                   : "tokens are thread-bound: exited on another thread than the one that entered it; the scope stays in force on that thread")
            return
        }
        switch state.pointee.removeToken(stamp: stamp) {
        case 0?:
            if dropped { report("the token was dropped without exit(); the scope ended where it was dropped") }
        case let depth?:
            report("exited out of order: \(depth) scope(s) entered after it are still active; it was removed, they stay")
        case nil:
            report("the token is not active on this thread (already exited)")
        }
    }
}

extension AllocationScope {
    /// Enters `scope` on the current thread until `exit()` is called on the
    /// token. Kernel analogue: `memalloc_nofs_save()` and friends.
    ///
    /// ```swift
    /// let token = AllocationScope.enter(.noDirectReclaim)
    /// defer { token.exit() }
    /// ```
    /// - Parameters:
    ///   - scope: the scope to enter on this thread.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    /// - Returns: the token that `exit()` leaves it with.
    @inlinable
    public static func enter(_ scope: AllocationScope, file: StaticString = #fileID,
                             line: UInt = #line) -> AllocationScopeToken {
        let state = ThreadScopeState.currentOrCreate()
        let stamp = state.pointee.pushToken(scope.entered())
        return AllocationScopeToken(threadSerial: state.pointee.serial, stamp: stamp, file: file, line: line)
    }
}

extension AllocationScopeToken {
    /// Gives up the token as a number, for a C caller (`mm_scope_enter`):
    /// the scope stays entered until `_resume(_:)` of that number is exited.
    @_spi(ProcessAllocator)
    public consuming func _detach() -> UInt64 {
        let stamp = self.stamp
        discard self
        return stamp
    }

    /// The calling thread's token with this number (`mm_scope_exit`); exiting
    /// it on another thread than the one that entered it is reported, as for
    /// any token.
    @_spi(ProcessAllocator)
    public static func _resume(_ number: UInt64, file: StaticString = #fileID, line: UInt = #line) -> AllocationScopeToken {
        let state = ThreadScopeState.currentOrCreate()
        return AllocationScopeToken(threadSerial: state.pointee.serial, stamp: number, file: file, line: line)
    }
}

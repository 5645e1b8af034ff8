// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Dispatch
import Testing

/// Where scopes reach: tasks, child tasks, `async let`, detached tasks,
/// threads, nesting, and tokens mixed with closures.
@Suite("Scopes across tasks, threads and tokens")
struct ScopeTests {
    @Test("Task {} inherits a closure scope, Task.detached does not")
    func tasks() async {
        let (inherited, detached) = await withAllocationScope(.excluding(.filesystem)) { () async -> (AllocationScope, AllocationScope) in
            let a = await Task { AllocationScope.current }.value
            let b = await Task.detached { AllocationScope.current }.value
            return (a, b)
        }
        #expect(inherited.excludes(.filesystem))
        #expect(detached == .none)
    }

    @Test("Task {} created inside a synchronous scope inherits it")
    func taskFromSyncScope() async {
        let task = withAllocationScope(.noDirectReclaim) { Task { AllocationScope.current } }
        #expect(await task.value.forbidsDirectReclaim)
    }

    @Test("withThreadAllocationScope: nested scopes accumulate with closure scopes and tokens, on this thread only")
    func threadOnlyScopes() async {
        let inner = withAllocationScope(.excluding(.filesystem)) {
            withThreadAllocationScope(.noDirectReclaim) {
                let token = AllocationScope.enter(.quiet)
                defer { token.exit() }
                return AllocationScope.current
            }
        }
        #expect(inner.excludes(.filesystem) && inner.forbidsDirectReclaim && inner.isQuiet)
        #expect(AllocationScope.current == .none)
        // An inner scope can never lift an outer restriction (R1), whichever kind each is.
        let nested = withThreadAllocationScope(.nonBlocking) { withAllocationScope(.excluding(.io)) { AllocationScope.current } }
        #expect(nested.isNonBlocking && nested.excludes(.io))
        // Tasks do not inherit a thread scope.
        let task = withThreadAllocationScope(.noDirectReclaim) { Task { AllocationScope.current } }
        #expect(await task.value == .none)
        // Other threads never see it.
        let other = Locked<AllocationScope?>(nil)
        withThreadAllocationScope(.noDirectReclaim) {
            runThreads(1) { _ in other.withLock { $0 = AllocationScope.current } }
        }
        #expect(other.withLock { $0 } == AllocationScope.none)
    }

    @Test("child tasks and async let inherit; the scope survives suspension points")
    func childTasks() async {
        await withAllocationScope(.retryForever) {
            async let child = { AllocationScope.current }()
            let groupValues = await withTaskGroup(of: AllocationScope.self) { group in
                for _ in 0..<4 { group.addTask { AllocationScope.current } }
                return await group.reduce(into: []) { $0.append($1) }
            }
            await Task.yield()
            try? await Task.sleep(for: .milliseconds(5))
            #expect(AllocationScope.current.upgradeGuarantee == .retryForever)
            #expect(await child.upgradeGuarantee == .retryForever)
            #expect(groupValues.allSatisfy { $0.upgradeGuarantee == .retryForever })
        }
        #expect(AllocationScope.current == .none)
    }

    @Test("a scope stays on its thread: another thread started inside does not see it")
    func threads() {
        let seen = Locked<AllocationScope?>(nil)
        withAllocationScope(.quiet) {
            let t = BackgroundThread { seen.withLock { $0 = AllocationScope.current } }
            t.join()
            #expect(AllocationScope.current.isQuiet)
        }
        #expect(seen.withLock { $0 } == AllocationScope.none)
    }

    @Test("nesting: sync inside async inside sync keeps every restriction")
    func mixedNesting() async {
        await withAllocationScope(.excluding(.io)) {
            await Task.yield()  // an async body: the async overload, across a suspension point
            withAllocationScope(.noDirectReclaim) {
                let token = AllocationScope.enter(.quiet)
                let s = AllocationScope.current
                #expect(s.excludes(.filesystem) && s.forbidsDirectReclaim && s.isQuiet)
                token.exit()
                #expect(!AllocationScope.current.isQuiet)
            }
            #expect(!AllocationScope.current.forbidsDirectReclaim)
            #expect(AllocationScope.current.excludes(.io))
        }
    }

    @Test("a token opened in one function and closed in another (a transaction)")
    func transaction() {
        struct Transaction: ~Copyable {
            let token: AllocationScopeToken
            init() { token = AllocationScope.enter(.excluding(.filesystem)) }
            consuming func commit() { token.exit() }
        }
        let t = Transaction()
        #expect(AllocationScope.current.excludes(.filesystem))
        t.commit()
        #expect(AllocationScope.current == .none)
    }

    @Test("tokens exited out of order: reported, removed, the others stay")
    func outOfOrder() throws {
        let mm = try makeSystem()
        let recorder = EventRecorder(mm)
        let line = #line + 1
        let a = AllocationScope.enter(.quiet)
        let b = AllocationScope.enter(.noDirectReclaim)
        a.exit()
        #expect(recorder.reports(aboutTokenEnteredAt: line).count == 1)
        #expect(recorder.reports(aboutTokenEnteredAt: line).first?.reason.contains("out of order") == true)
        #expect(AllocationScope.current.forbidsDirectReclaim)
        #expect(!AllocationScope.current.isQuiet)
        b.exit()
        #expect(AllocationScope.current == .none)
        #expect(recorder.reports(aboutTokenEnteredAt: line + 1).isEmpty)
    }

    @Test("a token exited on another thread is reported; the scope stays in force on its own thread")
    func wrongThread() throws {
        let mm = try makeSystem()
        let recorder = EventRecorder(mm)
        let line = #line + 1
        let token = AllocationScope.enter(.nonBlocking)
        let carrier = Locked<[AllocationScopeTokenBox]>([AllocationScopeTokenBox(token)])
        BackgroundThread { carrier.withLock { $0.removeLast() }.exitToken() }.join()
        #expect(recorder.reports(aboutTokenEnteredAt: line).first?.reason.contains("thread-bound") == true)
        #expect(AllocationScope.current.isNonBlocking)
        // Clean up this thread's stack for the following tests.
        let state = ThreadScopeState.current!
        while state.pointee.tokenDepth > 0 { _ = state.pointee.removeToken(stamp: state.pointee.tokens[0].stamp) }
    }

    @Test("a token dropped without exit() is reported and its scope ends")
    func dropped() throws {
        let mm = try makeSystem()
        let recorder = EventRecorder(mm)
        let line = #line + 2
        do {
            _ = AllocationScope.enter(.quiet)
        }
        #expect(recorder.reports(aboutTokenEnteredAt: line).first?.reason.contains("dropped without exit()") == true)
        #expect(AllocationScope.current == .none)
    }

    @Test("deep nesting grows the stacks")
    func deep() {
        func nest(_ n: Int) -> Bool {
            n == 0 ? AllocationScope.current.isQuiet : withAllocationScope(n == 50 ? .quiet : .none) { nest(n - 1) }
        }
        #expect(nest(100))
        var tokens: [AllocationScopeTokenBox] = []
        for _ in 0..<40 { tokens.append(AllocationScopeTokenBox(AllocationScope.enter(.noDirectReclaim))) }
        #expect(AllocationScope.current.forbidsDirectReclaim)
        while let t = tokens.popLast() { t.exitToken() }
        #expect(AllocationScope.current == .none)
    }
}

/// Moves a non-copyable token through copyable containers in tests.
final class AllocationScopeTokenBox: @unchecked Sendable {  // used by one thread at a time
    private var token: AllocationScopeToken?
    init(_ token: consuming AllocationScopeToken) { self.token = consume token }
    func exitToken() { token.take()?.exit() }
}

extension EventRecorder {
    /// Token-misuse reports about a token entered at `line` of this file
    /// (they go to every live system, so parallel tests see each other's).
    func reports(aboutTokenEnteredAt line: Int) -> [InvalidRequest] {
        invalidRequests.filter { $0.operation.contains("ScopeTests.swift:\(line))") }
    }
}

@Suite("Scope tokens at depth")
struct DeepTokenTests {
    /// Enters `depth` tokens, one per recursion level, and exits them on the way back.
    static func nest(_ depth: Int) {
        guard depth > 0 else {
            precondition(AllocationScope.current.forbidsDirectReclaim)
            return
        }
        let token = AllocationScope.enter(depth % 2 == 0 ? .noDirectReclaim : .excluding(.io))
        nest(depth - 1)
        token.exit()
    }

    @Test("entering and exiting 4096 nested tokens examines O(1) stack entries per token")
    func nestedTokensAreLinear() {
        let depth = 4096
        let probes = Atomic<Int>(0)
        let thread = BackgroundThread {   // its own 8 MiB stack for the recursion
            let before = ThreadScopeState.currentOrCreate().pointee.tokenProbes
            DeepTokenTests.nest(depth)
            probes.store(ThreadScopeState.current!.pointee.tokenProbes - before, ordering: .relaxed)
            precondition(AllocationScope.current == .none)
        }
        thread.join()
        let examined = probes.load(ordering: .relaxed)
        #expect(examined <= 4 * depth, "\(examined) stack entries examined for \(depth) tokens")
    }
}

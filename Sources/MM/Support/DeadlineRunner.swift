// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// Runs jobs on helper threads and waits for each at most a deadline: the
/// caller goes on when it passes, and the helper finishes the job on its own
/// (then waits for the next one). Helpers are kept for reuse, so a job costs
/// a hand-over, not a thread creation.
///
/// Reclaim runs every shrinker call through one of these, so that a
/// shrinker that sleeps or waits on a lock cannot stretch an allocation's
/// latency beyond the deadline. Kernel analogue: none (the kernel trusts
/// its shrinkers to be quick); the closest is the hung-task detector.
final class DeadlineRunner: Sendable {
    /// One helper thread and the job it runs.
    private final class Helper: @unchecked Sendable {  // job fields are guarded by `lock`
        let lock = ConditionLock()
        let state = Locked<State>(State())
        struct State: Sendable {
            var job: (@Sendable () -> Int)?
            var result: Int?
            var stopping = false
            /// The helper's loop has returned (its thread is detached: nobody joins it).
            var exited = false
        }
    }

    private struct Pool: Sendable {
        var idle: [Helper] = []
        var all: [Helper] = []
        var generation = 0
        var stopped = false
    }
    private let pool = Locked<Pool>(Pool())
    /// Runs on the helper after each job (for example, returns the objects
    /// the job freed from the helper's per-thread caches to the shared pools).
    private let afterJob: @Sendable () -> Void
    /// Idle helpers kept; more are stopped when they finish.
    static let keptIdle = 2

    init(afterJob: @escaping @Sendable () -> Void = {}) {
        self.afterJob = afterJob
    }

    /// Runs `job` on a helper and returns its result, or nil when it did not
    /// finish within `deadline` (it goes on running).
    func run(deadline: Duration, _ job: @escaping @Sendable () -> Int) -> Int? {
        guard let helper = takeHelper() else { return nil }
        helper.state.withLock { $0.job = job; $0.result = nil }
        helper.lock.broadcast()
        var result: Int?
        helper.lock.wait(timeout: deadline) {
            result = helper.state.withLock { $0.result }
            return result == nil
        }
        return result
    }

    /// An idle helper, or a new one; nil when stopped or no thread could be made.
    private func takeHelper() -> Helper? {
        let generation = ForkGate.generation
        let reused = pool.withLock { p -> Helper?? in
            if p.stopped { return .some(nil) }
            if p.generation != generation {  // a forked child: the parent's helpers do not exist here
                p.idle.removeAll()
                p.all.removeAll()
                p.generation = generation
            }
            return p.idle.popLast().map { .some($0) }
        }
        if let reused { return reused }
        let helper = Helper()
        guard let thread = SystemThread.start({ [self] in
            serve(helper)
            helper.state.withLock { $0.exited = true }
            helper.lock.broadcast()
        }) else { return nil }
        // Detached at once: every way out of `serve` then needs no join.
        pthread_detach(thread)
        pool.withLock { $0.all.append(helper) }
        return helper
    }


    /// A helper's loop: wait for a job, run it, publish the result, go idle.
    private func serve(_ helper: Helper) {
        while true {
            var job: (@Sendable () -> Int)?
            var stopping = false
            helper.lock.wait(timeout: .seconds(3600)) {
                (job, stopping) = helper.state.withLock { ($0.job, $0.stopping) }
                return job == nil && !stopping
            }
            if let job {
                let result = job()
                afterJob()
                helper.state.withLock { $0.job = nil; $0.result = result }
                helper.lock.broadcast()
                let keep = pool.withLock { p -> Bool in
                    guard !p.stopped, p.idle.count < DeadlineRunner.keptIdle else {
                        p.all.removeAll { $0 === helper }
                        return false
                    }
                    p.idle.append(helper)
                    return true
                }
                if !keep { return }
            } else if stopping {
                return
            }
        }
    }

    /// Stops the idle helpers and waits (up to 5 s each) until they have
    /// left their loop; busy ones stop after their job. Call when the owner goes away.
    func stop() {
        let idle = pool.withLock { p -> [Helper] in
            p.stopped = true
            let idle = p.generation == ForkGate.generation ? p.idle : []
            p.idle.removeAll()
            p.all.removeAll { h in idle.contains { $0 === h } }
            return idle
        }
        for helper in idle {
            helper.state.withLock { $0.stopping = true }
            helper.lock.broadcast()
            helper.lock.wait(timeout: .seconds(5)) { !helper.state.withLock { $0.exited } }
        }
    }
}

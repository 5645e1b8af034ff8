// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// One thread per system that keeps free memory above `high`: woken when an
/// allocation finds free memory below `low`, it reclaims (unrestricted,
/// inside `.reclaiming`) until free memory is above `high`, which serves the
/// requests that may not reclaim themselves; when it cannot make progress
/// while requests wait, it invokes the OOM handler (R6). It also returns
/// long-idle free memory to the OS. Kernel analogue: kswapd.
final class BackgroundReclaimer: @unchecked Sendable {  // pthread handle written once before start, read by stop()
    private let engine: ReclaimEngine
    private let lock = ConditionLock()
    private let pending = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private var thread = pthread_t()
    /// The fork generation in which the thread was started: a forked child
    /// has no such thread and starts its own on the first wake-up.
    private let startedGeneration = Atomic<Int>(-1)
    /// Passes without progress before the OOM handler is asked, when requests wait.
    static let passesBeforeOOM = 3

    init(engine: ReclaimEngine) {
        self.engine = engine
    }

    func start() {
        startedGeneration.store(ForkGate.generation, ordering: .releasing)
        startThread()
    }

    private func startThread() {
        guard let thread = SystemThread.start({ [self] in run() }) else {
            preconditionFailure("swift-mm: cannot start the background reclaimer: the system refused a thread")
        }
        self.thread = thread
    }

    /// Stops the thread and waits for it (system teardown).
    func stop() {
        stopping.store(true, ordering: .releasing)
        pending.store(true, ordering: .releasing)
        lock.broadcast()
        // Only a thread started in this process can be joined (not the parent's, after fork).
        if startedGeneration.load(ordering: .acquiring) == ForkGate.generation {
            pthread_join(thread, nil)
        }
    }

    /// Asks for a pass; cheap when one is already pending.
    func wake() {
        restartAfterFork()
        guard !pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        lock.broadcast()
    }

    /// In a forked child, starts this process's own thread (once).
    private func restartAfterFork() {
        let generation = ForkGate.generation
        let started = startedGeneration.load(ordering: .acquiring)
        guard started != generation, !stopping.load(ordering: .acquiring) else { return }
        if startedGeneration.compareExchange(expected: started, desired: generation, ordering: .acquiringAndReleasing).exchanged {
            pending.store(false, ordering: .relaxed)
            startThread()
        }
    }

    private func sleep(upTo timeout: Duration) {
        lock.wait(timeout: timeout) { !pending.load(ordering: .acquiring) && !stopping.load(ordering: .acquiring) }
    }

    private func run() {
        let token = AllocationScope.enter(.reclaiming)
        
        while !stopping.load(ordering: .acquiring) {
            sleep(upTo: .milliseconds(500))
            if stopping.load(ordering: .acquiring) { break }
            let woken = pending.exchange(false, ordering: .acquiringAndReleasing)
            if woken { engine.counters.withLock { $0.backgroundWakeups += 1 } }
            var fruitless = 0
            while !stopping.load(ordering: .acquiring) {
                let free = engine.pages.freePages
                let waiters = engine.pages.waitQueue.waiterCount
                guard free <= engine.pages.watermarks.high || waiters > 0 else { break }
                let gained = engine.backgroundPass()
                fruitless = gained > 0 ? 0 : fruitless + 1
                if fruitless >= BackgroundReclaimer.passesBeforeOOM {
                    // R6: it runs unrestricted, so it may invoke the OOM handler for waiters —
                    // unless memory came back meanwhile (a victim released, a racing free): like the
                    // kernel's last-chance allocation at the high watermark before out_of_memory().
                    // R11: also when the process limit was lowered below usage (as writing
                    // memory.max does in the kernel); with nobody left to kill, that is reported.
                    let refilled = engine.pages.freePages > engine.pages.watermarks.high
                    let overLimit = engine.pages.freePages < 0
                    if engine.pages.waitQueue.waiterCount > 0 && !refilled {
                        _ = engine.outOfMemory(trigger: "background reclaimer: no progress with \(engine.pages.waitQueue.waiterCount) request(s) waiting")
                    } else if overLimit {
                        engine.enforceLimit()
                    }
                    break
                }
            }
            // What the process limit withholds goes back to the OS now; idle memory once it has aged.
            engine.pages.releaseWithheld()
            if let order = engine.pages.releaseOrder, engine.pages.freePages > engine.pages.watermarks.high {
                engine.pages.releasePass(minOrder: order, minimumAge: engine.pages.releaseDelayTicks, limit: 64, now: engine.pages.tick)
            }
        }
        engine.pages.drainCallingThread()
        token.exit()
    }
}

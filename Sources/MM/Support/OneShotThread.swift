// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// Runs a closure on a new thread and waits for it at most `deadline`.
/// Used where running code on the calling thread could deadlock on a lock
/// that thread holds: if the deadline passes, the caller goes on and the
/// thread finishes on its own once it can.
enum OneShotThread {
    private final class Job: Sendable {
        let body: @Sendable () -> Int
        let result = Atomic<Int>(0)
        let done = Atomic<Bool>(false)
        let lock = ConditionLock()
        init(_ body: @escaping @Sendable () -> Int) { self.body = body }
    }

    /// The closure's result, or nil if it did not finish in time.
    static func run(deadline: Duration, _ body: @escaping @Sendable () -> Int) -> Int? {
        let job = Job(body)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(job).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let rc = pthread_create(&thread, &attributes, { raw in
            let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
            job.result.store(job.body(), ordering: .relaxed)
            job.done.store(true, ordering: .releasing)
            job.lock.broadcast()
            return nil
        }, context)
        pthread_attr_destroy(&attributes)
        guard rc == 0 else {
            Unmanaged<Job>.fromOpaque(context).release()
            return nil
        }
        job.lock.wait(timeout: deadline) { !job.done.load(ordering: .acquiring) }
        return job.done.load(ordering: .acquiring) ? job.result.load(ordering: .relaxed) : nil
    }
}

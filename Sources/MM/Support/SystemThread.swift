// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc

/// Starting the allocator's own threads (the background reclaimer, shrinker
/// helpers): a plain pthread running a Swift closure, so that it works
/// before and outside any Swift concurrency runtime and can be joined.
/// Kernel analogue: `kthread_run`.
enum SystemThread {
    private final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Starts a thread running `body`; nil (and nothing started) when the
    /// system refuses a thread.
    static func start(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            // The allocator's own threads never allocate from the process allocator
            // (libmmmalloc): their Swift runtime allocations go to glibc, so that reclaim
            // never waits on, or fails for want of, the memory it is reclaiming
            // (the kernel's kswapd runs with PF_MEMALLOC for the same reason).
            cmm_thread_slots_get().pointee.mallocDepth = 1
            ThreadSlots.refreshFastPathSlots()
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            return nil
        }
        return thread
    }
}

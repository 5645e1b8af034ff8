// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Glibc
import Testing

/// A thread's exit destructors take back its per-thread caches (magazines,
/// page lists). Work the thread does after that — in another key's
/// destructor, in the last round glibc runs them — must not make new caches:
/// no destructor would take those back, and every exiting thread would leak
/// them (as the process allocator did: the teardown of one kind of cache
/// allocated through the other, and the two made each other again, round after
/// round, until the rounds ran out).
@Suite("Thread exit")
struct ThreadExitTests {
    /// The program's own thread-specific data: its destructor re-arms itself
    /// until the last round of destructors, then frees what the thread
    /// allocated and allocates and frees again. One thread at a time touches it.
    ///
    /// Under ThreadSanitizer the work runs one round earlier: TSan's own key
    /// (made before any of ours) destroys the thread's sanitizer state in the
    /// last round, before our destructor runs, and instrumented code that runs
    /// after that reads freed state and crashes. The round before still comes
    /// after this system's destructors have taken the caches back.
    final class LateWork: @unchecked Sendable {
        let mm: MemorySystem
        let rounds = Int(sysconf(Int32(_SC_THREAD_DESTRUCTOR_ITERATIONS))) - (runningUnderThreadSanitizer ? 1 : 0)
        var key = pthread_key_t()
        var round = 0
        var object: UnsafeMutableRawPointer?
        var block: UnsafeMutableRawPointer?
        var servedInLastRound = false
        init(_ mm: MemorySystem) { self.mm = mm }

        func lastRound() {
            if let object { mm.deallocate(object) }
            if let block { mm.freePages(block, order: 0) }
            let p = mm.allocate(byteCount: 64), b = mm.allocatePages(order: 0)
            servedInLastRound = p != nil && b != nil
            if let p { mm.deallocate(p) }
            if let b { mm.freePages(b, order: 0) }
        }
    }

    @Test("frees and allocations in the last round of a thread's exit destructors leave no caches behind",
          .timeLimit(.minutes(1)))
    func lateExitWorkLeavesNoCaches() throws {
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.logsEvents = false
        let mm = try MemorySystem(config)
        // This system's keys are made before the program's, so their destructors run first in every round.
        mm.deallocate(try #require(mm.allocate(byteCount: 64)))
        mm.freePages(try #require(mm.allocatePages(order: 0)), order: 0)
        let lists = PageAllocator.lists.attachedCount(mm.pages.systemID)
        let magazines = SlabAllocator.magazines.attachedCount(mm.slab.systemID)
        let work = LateWork(mm)
        #expect(work.rounds >= 1)
        #expect(pthread_key_create(&work.key) { raw in
            let work = Unmanaged<LateWork>.fromOpaque(raw!).takeUnretainedValue()
            work.round += 1
            if work.round < work.rounds {
                pthread_setspecific(work.key, raw)  // once more, in the next round
            } else {
                work.lastRound()
            }
        } == 0)
        defer { pthread_key_delete(work.key) }
        runThreads(1) { _ in
            work.object = mm.allocate(byteCount: 64)
            work.block = mm.allocatePages(order: 0)
            pthread_setspecific(work.key, Unmanaged.passUnretained(work).toOpaque())
        }
        #expect(work.round == work.rounds, "the program's destructor ran \(work.round) of \(work.rounds) rounds")
        #expect(work.servedInLastRound, "an exiting thread's allocation failed")
        #expect(PageAllocator.lists.attachedCount(mm.pages.systemID) == lists,
                "the exited thread left page lists attached (made after its destructor ran)")
        #expect(SlabAllocator.magazines.attachedCount(mm.slab.systemID) == magazines,
                "the exited thread left magazines attached (made after its destructor ran)")
        #expect(mm._invariantViolations().isEmpty, "\(mm._invariantViolations())")
        let stats = mm.statistics()
        let kmalloc64 = try #require(stats.slabCaches.first { $0.name == "kmalloc-64" })
        #expect(kmalloc64.activeObjects == 0, "an object freed by the exiting thread is still counted live")
    }
}

// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Synchronization
import Testing

/// A system for fork tests, with background reclaim.
func makeForkSystem(capacity: Int = 64 << 20) -> MemorySystem {
    var config = MemoryConfiguration(capacity: capacity)
    config.logsEvents = false
    return try! MemorySystem(config)
}

/// One allocation of every placement: a kmalloc object, pages, a vmalloc
/// area, a kvmalloc (automatic) buffer that had to go virtual.
func allocateEveryPlacement(_ mm: MemorySystem) -> [(name: String, pointer: UnsafeMutableRawPointer, bytes: Int)] {
    var virtual = AllocationPolicy.standard
    virtual.placement = .virtual
    var automatic = AllocationPolicy.standard
    automatic.placement = .automatic
    return [
        ("kmalloc-64", mm.allocate(byteCount: 64)!, 64),
        ("pages", mm.allocatePages(order: 2)!, 4 * pageSize),
        ("vmalloc", mm.allocate(byteCount: 3 << 20, policy: virtual)!, 3 << 20),
        ("kvmalloc", mm.allocate(byteCount: 6 << 20, policy: automatic)!, 6 << 20),
    ]
}

/// Fills every word at a 512-byte stride with `tag ^ offset`.
func fill(_ p: UnsafeMutableRawPointer, bytes: Int, tag: UInt64) {
    for offset in stride(from: 0, to: bytes - 7, by: 512) { (p + offset).storeBytes(of: tag ^ UInt64(offset), as: UInt64.self) }
}

/// Whether `fill(p, bytes, tag)` is what the memory holds.
func holds(_ p: UnsafeMutableRawPointer, bytes: Int, tag: UInt64) -> Bool {
    for offset in stride(from: 0, to: bytes - 7, by: 512) where (p + offset).load(as: UInt64.self) != tag ^ UInt64(offset) {
        return false
    }
    return true
}

@Suite("fork: the child gets a private copy-on-write snapshot and keeps allocating",
       .disabled(if: runningUnderThreadSanitizer, "ThreadSanitizer does not support a forked child of a multi-threaded process that starts threads (the child's background reclaimer)"))
struct ForkTests {
    @Test("writes in either process are never seen by the other, in every placement")
    func isolation() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let mm = makeForkSystem()
            let all = allocateEveryPlacement(mm)
            for a in all { fill(a.pointer, bytes: a.bytes, tag: 0x2222) }
            let parentWrote = ForkPipe(), childChecked = ForkPipe()
            let pid = fork()
            if pid == 0 {
                parentWrote.keepReading()
                childChecked.keepWriting()
                parentWrote.await()
                for a in all where !holds(a.pointer, bytes: a.bytes, tag: 0x2222) {
                    writeToStandardError("child sees the parent's write after fork in \(a.name)\n")
                    _exit(2)
                }
                for a in all { fill(a.pointer, bytes: a.bytes, tag: 0xBAD) }
                childChecked.signal()
                _exit(0)
            }
            parentWrote.keepWriting()
            childChecked.keepReading()
            for a in all { fill(a.pointer, bytes: a.bytes, tag: 0x3333) }
            parentWrote.signal()
            childChecked.await()  // or end-of-file if the child died
            let child = waitForChild(pid, seconds: 20)
            var failure = child
            for a in all where !holds(a.pointer, bytes: a.bytes, tag: 0x3333) {
                failure = "the parent sees the child's write in \(a.name)"
            }
            finishExitTest(failure)
        }
        reportStandardError(result)
    }

    @Test("the child allocates and frees 10^5 objects and its parent's pointers, in every placement; so does the parent")
    func childKeepsAllocating() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let mm = makeForkSystem()
            let all = allocateEveryPlacement(mm)
            let sizes = [8, 24, 64, 200, 1000, 4096, 20_000, 300_000]
            let inChild = runForkedChild {
                var held: [UnsafeMutableRawPointer] = []
                var rng = SeededGenerator(seed: 7)
                for i in 0..<100_000 {
                    let size = sizes[Int(rng.next() % UInt64(sizes.count))]
                    guard let p = mm.allocate(byteCount: size) else { return "allocation \(i) of \(size) bytes failed" }
                    p.storeBytes(of: UInt64(i), as: UInt64.self)
                    held.append(p)
                    if held.count > 64 {
                        let victim = held.remove(at: Int(rng.next() % UInt64(held.count)))
                        mm.deallocate(victim)
                    }
                }
                for p in held { mm.deallocate(p) }
                for a in all {
                    if a.name == "pages" { mm.freePages(a.pointer, order: 2) } else { mm.deallocate(a.pointer) }
                }
                mm.drainPerThreadLists()
                let problems = mm._invariantViolations()
                guard problems.isEmpty else { return "invariants: \(problems)" }
                let s = mm.statistics()
                return s.freeBytes == s.capacity ? nil : "child: \(s.capacity - s.freeBytes) bytes not free after freeing everything"
            }
            // The parent's allocations are its own: still there, and freeable.
            for a in all {
                if a.name == "pages" { mm.freePages(a.pointer, order: 2) } else { mm.deallocate(a.pointer) }
            }
            mm.drainPerThreadLists()
            let problems = mm._invariantViolations()
            finishExitTest(inChild ?? (problems.isEmpty ? nil : "parent invariants: \(problems)"))
        }
        reportStandardError(result)
    }

    @Test("fork while other threads are inside the allocator's slow paths and locks: the child never deadlocks")
    func forkUnderConcurrency() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let mm = makeForkSystem(capacity: 32 << 20)
            let stop = Atomic<Bool>(false)
            let laps = Atomic<Int>(0)
            var virtual = AllocationPolicy.standard
            virtual.placement = .virtual
            // The child's own work once in the parent first: a forked child may not be the first
            // to instantiate Swift metadata, because another thread of the parent may have held
            // the runtime's metadata lock at the fork (POSIX: after fork in a threaded process,
            // only async-signal-safe work is safe; the Swift runtime's first-use paths are not).
            if let f = childWork(mm) { finishExitTest("in the parent, before any fork: \(f)") }
            let workers = (0..<2).map { w in
                BackgroundThread { [virtual] in
                    var i = 0
                    while !stop.load(ordering: .relaxed) {
                        laps.wrappingAdd(1, ordering: .relaxed)
                        // Slow paths: pages to the zone, vmalloc, object refills and drains, reclaim.
                        if let p = mm.allocatePages(order: 3 + (i % 4)) { mm.freePages(p, order: 3 + (i % 4)) }
                        if let v = mm.allocate(byteCount: 300_000, policy: virtual) { mm.deallocate(v) }
                        var objects: [UnsafeMutableRawPointer] = []
                        for _ in 0..<300 { if let o = mm.allocate(byteCount: 96) { objects.append(o) } }
                        for o in objects { mm.deallocate(o) }
                        if i % 16 == w { mm.shrinkObjectCaches() }
                        _ = mm.statistics().freeBytes
                        i += 1
                    }
                }
            }
            // The workers, too, have run every path once before the first fork.
            while laps.load(ordering: .relaxed) < 4 { usleep(1_000) }
            var failure: String?
            let forkRounds = getenv("MM_FORK_ROUNDS").flatMap { Int(String(cString: $0)) } ?? 20
            for round in 0..<forkRounds where failure == nil {
                usleep(3_000)
                if let f = runForkedChild(seconds: 30, { childWork(mm) }) {
                    failure = "round \(round): \(f)"
                }
            }
            stop.store(true, ordering: .relaxed)
            for w in workers { w.join() }
            finishExitTest(failure)
        }
        reportStandardError(result)
    }

    @Test("in the child, other threads' cached pages and objects come back, and background reclaim runs again")
    func childRepairs() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var config = MemoryConfiguration(capacity: 16 << 20)
            config.logsEvents = false
            let mm = try! MemorySystem(config)
            let helper = LiveHelperThread()
            helper.run {
                var pages: [UnsafeMutableRawPointer] = []
                for _ in 0..<8 { pages.append(mm.allocatePages(order: 0)!) }
                for p in pages { mm.freePages(p, order: 0) }
                var objects: [UnsafeMutableRawPointer] = []
                for _ in 0..<100 { objects.append(mm.allocate(byteCount: 512)!) }
                for o in objects { mm.deallocate(o) }
            }
            let failure = runForkedChild {
                // Only this thread exists: nothing may be cached for another.
                let lists = PageAllocator.lists.attachedCount(mm.pages.systemID)
                let magazines = SlabAllocator.magazines.attachedCount(mm.slab.systemID)
                guard lists <= 1, magazines <= 1 else { return "records of vanished threads: \(lists) page lists, \(magazines) magazines" }
                let cachedElsewhere = mm.slab.statistics().reduce(0) { $0 + $1.cachedInThreads }
                let mine = ObjectMagazines.current.map { m in (0..<maxObjectCaches).reduce(0) { $0 + (m.hasStack($1) ? m.count($1) : 0) } } ?? 0
                guard cachedElsewhere == mine else { return "\(cachedElsewhere - mine) objects still cached for vanished threads" }
                // A cache the background reclaimer must shrink: fill memory with non-blocking
                // requests (which wake it), then wait for its pass.
                let cache = TestCache(mm, name: "child-cache")
                let registration = mm.registerShrinker(cache)
                cache.fill(4096)
                for _ in 0..<200 {
                    if mm.statistics()[counter: "background_reclaim_runs"] > 0 { break }
                    _ = mm.allocate(byteCount: 4096, policy: .nonBlocking).map { mm.deallocate($0) }
                    usleep(10_000)
                }
                let runs = mm.statistics()[counter: "background_reclaim_runs"]
                registration.unregister()
                cache.clear()
                return runs > 0 ? nil : "the background reclaimer did not run in the child"
            }
            helper.stop()
            finishExitTest(failure)
        }
        reportStandardError(result)
    }

    @Test("fork then exec runs the new program")
    func forkExec() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let mm = makeForkSystem()
            let p = mm.allocate(byteCount: 1 << 20)!
            let pid = fork()
            if pid == 0 {
                let path = "/bin/sh"
                let args = [path, "-c", "exit 7"]
                var cArgs = args.map { strdup($0) } + [nil]
                execv(path, &cArgs)
                _exit(99)
            }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            mm.deallocate(p)
            finishExitTest((status >> 8) & 0xff == 7 ? nil : "exec'd program returned status \(status)")
        }
        reportStandardError(result)
    }

    @Test("fork copies nothing: right after fork the child's heap is all shared with the parent")
    func noCopyAtFork() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let mm = makeForkSystem(capacity: 256 << 20)
            var virtual = AllocationPolicy.standard
            virtual.placement = .virtual
            let direct = mm.allocate(byteCount: 4 << 20, policy: .standard)!
            let area = mm.allocate(byteCount: 60 << 20, policy: virtual)!
            memset(direct, 0x5a, 4 << 20)
            memset(area, 0x5a, 60 << 20)
            let ranges = [UInt(bitPattern: mm.pageFastPath.directMap)..<(UInt(bitPattern: mm.pageFastPath.directMap) + UInt(256 << 20)),
                          mm.virtual.region]
            let parentResident = smapsField("Rss", in: ranges)
            let failure = runForkedChild {
                let privateBytes = smapsField("Private_Dirty", in: ranges)
                let resident = smapsField("Rss", in: ranges)
                guard resident >= 60 << 20 else { return "child sees only \(resident >> 20) MiB of the heap resident" }
                return privateBytes < 2 << 20 ? nil
                    : "\(privateBytes >> 20) MiB of the child's heap is private right after fork (parent resident \(parentResident >> 20) MiB): the heap was copied"
            }
            finishExitTest(failure)
        }
        reportStandardError(result)
    }
}

/// Records what a failed exit test wrote to stderr (its explanation).
func reportStandardError(_ result: ExitTest.Result?, sourceLocation: SourceLocation = #_sourceLocation) {
    let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    if text.contains("FAILED") {
        Issue.record("\(text)", sourceLocation: sourceLocation)
    }
}

/// Sum of one smaps field (kB lines) over the mappings inside `ranges`.
func smapsField(_ field: String, in ranges: [Range<UInt>]) -> Int {
    var total = 0
    var inside = false
    for line in readWholeFile("/proc/self/smaps").split(separator: "\n") {
        if let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
           let start = UInt(line[..<dash], radix: 16), let end = UInt(line[line.index(after: dash)..<space], radix: 16) {
            inside = ranges.contains { $0.lowerBound <= start && end <= $0.upperBound }
        } else if inside, line.hasPrefix(field + ":") {
            total += (Int(line.dropFirst(field.count + 1).filter(\.isNumber)) ?? 0) << 10
        }
    }
    return total
}

/// What each forked child of `forkUnderConcurrency` does; nil when it all worked.
private func childWork(_ mm: MemorySystem) -> String? {
    var held: [UnsafeMutableRawPointer] = []
    for size in [64, 96, 4096, 100_000, 2 << 20] {
        guard let p = mm.allocate(byteCount: size) else { return "allocate(\(size)) failed" }
        held.append(p)
    }
    for p in held { mm.deallocate(p) }
    mm.shrinkObjectCaches()
    _ = mm.statistics()
    return nil
}

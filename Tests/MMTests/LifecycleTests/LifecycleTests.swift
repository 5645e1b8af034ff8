// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Testing
@testable import MM
import Synchronization

/// What the process holds right now: open descriptors, mappings, resident bytes.
struct ProcessFootprint: CustomStringConvertible {
    var fds: Int
    var maps: Int
    var rssBytes: Int

    static func now() -> ProcessFootprint {
        var fds = 0
        if let dir = opendir("/proc/self/fd") {
            while readdir(dir) != nil { fds += 1 }
            closedir(dir)
        }
        let maps = readWholeFile("/proc/self/maps").split(separator: "\n").count
        let statm = readWholeFile("/proc/self/statm").split(separator: " ")
        let rss = statm.count > 1 ? (Int(statm[1]) ?? 0) * pageSize : 0
        return ProcessFootprint(fds: fds, maps: maps, rssBytes: rss)
    }

    var description: String { "fds \(fds), maps \(maps), RSS \(rssBytes >> 10) KiB" }
}

/// Writes `text` to file descriptor 2 (for exit tests' observed stderr).
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// A shrinker that holds on to its system only weakly, as a cache inside the
/// system's user would (a strong reference would be the user's own cycle).
private final class WeakCache: Shrinker, @unchecked Sendable {  // the list is behind its lock
    let name = "lifecycle-cache"
    let domain: ReclaimDomain? = nil
    weak var mm: MemorySystem?
    let objects = Locked<[UInt]>([])
    init(_ mm: MemorySystem) { self.mm = mm }
    func countObjects(_ control: ShrinkControl) -> Int { objects.withLock { $0.count } }
    func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        let victims = objects.withLock { list -> [UInt] in
            let k = min(control.objectsToScan, list.count)
            defer { list.removeFirst(k) }
            return Array(list.prefix(k))
        }
        for v in victims { mm?.deallocate(UnsafeMutableRawPointer(bitPattern: v)!) }
        return .freed(victims.count)
    }
}

/// Creates a system, uses every part of it (pages, objects, vmalloc, a
/// shrinker, groups, scopes, a sink, background reclaim, another live
/// thread's caches), frees what it allocated and drops it.
func useAndDropOneSystem(helper: LiveHelperThread) throws {
    var config = MemoryConfiguration(capacity: 16 << 20)
    config.logsEvents = false
    config.backgroundReclaim = true
    let mm = try MemorySystem(config)
    let events = Atomic<Int>(0)
    mm.addEventSink { _ in events.wrappingAdd(1, ordering: .relaxed) }
    let cache = WeakCache(mm)
    let registration = mm.registerShrinker(cache)
    let group = mm.makeGroup(name: "tenant", onOOMKill: { _ in })
    var policy = AllocationPolicy.standard
    policy.group = group
    var kept: [UnsafeMutableRawPointer] = []
    withAllocationScope(.excluding(.filesystem)) {
        for size in [16, 64, 256, 4096, 20_000, 1 << 20] {
            if let p = mm.allocate(byteCount: size, policy: policy) { kept.append(p) }
        }
    }
    let token = AllocationScope.enter(.noDirectReclaim)
    for _ in 0..<8 {
        if let p = mm.allocate(byteCount: 128) { cache.objects.withLock { $0.append(UInt(bitPattern: p)) } }
    }
    token.exit()
    if let pages = mm.allocatePages(order: 2) { mm.freePages(pages, order: 2) }
    // Another thread that stays alive caches this system's pages and objects.
    helper.run { mm.deallocate(mm.allocate(byteCount: 48)!); mm.freePages(mm.allocatePages(order: 0)!, order: 0) }
    mm.reclaim(bytes: 1 << 20)
    for p in kept { mm.deallocate(p) }
    for o in cache.objects.withLock({ $0 }) { mm.deallocate(UnsafeMutableRawPointer(bitPattern: o)!) }
    registration.unregister()
}

/// A thread that stays alive and runs jobs handed to it, one at a time.
final class LiveHelperThread: @unchecked Sendable {  // job and flags behind the lock
    private let lock = ConditionVariableBox()
    private var job: (@Sendable () -> Void)?
    private var stopping = false
    private var thread = pthread_t()

    init() {
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<LiveHelperThread>.fromOpaque(raw!).takeRetainedValue()
            me.loop()
            return nil
        }, me)
    }

    private func loop() {
        while true {
            lock.lock()
            while job == nil && !stopping { lock.wait() }
            if stopping && job == nil { lock.unlock(); return }
            let work = job!
            lock.unlock()
            work()
            lock.lock()
            job = nil
            lock.broadcast()
            lock.unlock()
        }
    }

    /// Runs `work` on the helper and waits for it.
    func run(_ work: @escaping @Sendable () -> Void) {
        lock.lock()
        job = work
        lock.broadcast()
        while job != nil { lock.wait() }
        lock.unlock()
    }

    func stop() {
        lock.lock()
        stopping = true
        lock.broadcast()
        lock.unlock()
        pthread_join(thread, nil)
    }
}

/// A pthread mutex and condition, for the helper thread.
final class ConditionVariableBox: @unchecked Sendable {  // used only through pthread calls
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil); pthread_cond_init(condition, nil) }
    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func wait() { pthread_cond_wait(condition, mutex) }
    func broadcast() { pthread_cond_broadcast(condition) }
}

@Suite("Lifecycle: a dropped system leaves nothing behind")
struct LifecycleTests {
    @Test("dropping the last reference runs the system's deinit and the arena's")
    func dropReleasesTheArena() throws {
        weak var weakSystem: MemorySystem?
        weak var weakArena: Arena?
        do {
            var config = MemoryConfiguration(capacity: 8 << 20)
            config.logsEvents = false
            config.backgroundReclaim = true
            let mm = try MemorySystem(config)
            mm.deallocate(mm.allocate(byteCount: 64)!)
            _ = mm.registerShrinker(RecordingShrinker(freeable: 1))
            weakSystem = mm
            weakArena = mm.pages.arena
        }
        #expect(weakSystem == nil)
        #expect(weakArena == nil, "the arena outlived its system: a reference cycle keeps it")
    }

    @Test("1000 systems created, used and dropped: descriptors, mappings and RSS come back")
    func thousandSystems() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let helper = LiveHelperThread()
            // Warm up lazy globals (registries, TLS records) before the baseline.
            for _ in 0..<20 { try! useAndDropOneSystem(helper: helper) }
            let before = ProcessFootprint.now()
            for _ in 0..<1000 { try! useAndDropOneSystem(helper: helper) }
            let after = ProcessFootprint.now()
            let message = "before: \(before); after 1000 systems: \(after)\n"
            writeToStandardError(message)
            helper.stop()
            let leaked = after.fds > before.fds + 2 || after.maps > before.maps + 8 || after.rssBytes > before.rssBytes + (8 << 20)
            finishExitTest(leaked ? "a dropped system left descriptors, mappings or memory behind" : nil)
        }
        let report = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(report.contains("after 1000 systems") && !report.contains("FAILED"), "\(report)")
        print(report)
    }
}

@Suite("Lazy metadata: a system of any capacity costs almost nothing until used")
struct LazyMetadataTests {
    @Test("RSS after init stays under 4 MiB for capacities up to 1 TiB; free memory is found without touching untouched metadata")
    func rssAfterInit() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var report = ""
            var failure: String?
            // What the first system of a process costs once — code paged in, runtime
            // metadata, the layers' registries, a sanitizer's shadow — is not the capacity's.
            do {
                var warmUp = MemoryConfiguration(capacity: 16 << 20)
                warmUp.logsEvents = false
                let mm = try! MemorySystem(warmUp)
                mm.freePages(mm.allocatePages(order: maxOrder)!, order: maxOrder)
            }
            for shift in [30, 36, 38, 40] {  // 1 GiB, 64 GiB, 256 GiB, 1 TiB
                let before = ProcessFootprint.now().rssBytes
                var config = MemoryConfiguration(capacity: 1 << shift)
                config.logsEvents = false
                let mm = try! MemorySystem(config)
                let grown = ProcessFootprint.now().rssBytes - before
                let metadata = mm.statistics().metadataResidentBytes
                // Allocate from the far end of the arena's free memory: the lists are empty,
                // so blocks come from the frontier one at a time.
                let p = mm.allocatePages(order: maxOrder)!
                mm.freePages(p, order: maxOrder)
                let afterUse = mm.statistics().metadataResidentBytes
                report += "capacity 2^\(shift): RSS +\(grown >> 10) KiB, metadata \(metadata >> 10) KiB, after one block \(afterUse >> 10) KiB\n"
                if grown > 4 << 20 || metadata > 64 << 10 || afterUse > 64 << 10 { failure = "capacity 2^\(shift) costs too much" }
                if !mm._invariantViolations().isEmpty { failure = "invariants broken at 2^\(shift)" }
            }
            writeToStandardError(report)
            finishExitTest(failure)
        }
        let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(!text.contains("FAILED"), "\(text)")
        print(text)
    }

    @Test("the frontier: blocks come from the lists first, then one largest block at a time from untouched memory")
    func frontier() throws {
        let mm = try makeSystem(capacity: 64 << 20, perThreadLists: false)
        #expect(mm.pages.zone.withLock { $0.buddy.frontier } == 0)
        let a = try #require(mm.allocatePages(order: 0))
        #expect(mm.pages.zone.withLock { $0.buddy.frontier } == 1 << maxOrder)
        let b = try #require(mm.allocatePages(order: 3))   // split from the same largest block
        #expect(mm.pages.zone.withLock { $0.buddy.frontier } == 1 << maxOrder)
        let c = try #require(mm.allocatePages(order: maxOrder))
        #expect(mm.pages.zone.withLock { $0.buddy.frontier } == 2 << maxOrder)
        let s = mm.statistics()
        #expect(s.freeBytes == (64 << 20) - (1 + 8 + 1024) * pageSize)
        #expect(s.freeBlocksPerOrder[maxOrder] == 14)   // 16 blocks less the split one and c
        for (p, order) in [(a, 0), (b, 3), (c, maxOrder)] { mm.freePages(p, order: order) }
        #expect(mm.statistics().freeBytes == 64 << 20)
        #expect(mm._invariantViolations() == [])
        // Fill down to the min watermark: the frontier reaches the end.
        let all = fillPages(mm, .standard)
        #expect(all.count == ((64 << 20) - mm.configuration.effectiveWatermarks.min) / pageSize)
        #expect(mm.pages.zone.withLock { $0.buddy.frontier } == (64 << 20) / pageSize)
        for p in all { mm.freePages(p, order: 0) }
        #expect(mm._invariantViolations() == [])
    }
}

@Suite("Checked mode: dropping a system with memory still allocated")
struct OutstandingAtDropTests {
    @Test("with trapsOnMemoryOutstandingAtDrop, dropping a system that still has allocations stops the process and says how much",
          arguments: ["object", "pages", "vmalloc"])
    func trapsWhenOutstanding(_ what: String) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [what = what as String] in
            var config = MemoryConfiguration(capacity: 16 << 20)
            config.logsEvents = false
            config.trapsOnMemoryOutstandingAtDrop = true
            var mm: MemorySystem? = try! MemorySystem(config)
            switch what {
            case "object": _ = mm!.allocate(byteCount: 64)
            case "pages": _ = mm!.allocatePages(order: 1)
            default: _ = mm!.allocate(byteCount: 5 << 20, policy: .init(placement: .virtual))
            }
            mm = nil
        }
        let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(text.contains("dropped with memory still allocated"), "\(text)")
    }

    @Test("with everything freed (objects still cached in magazines included), the checked drop is silent")
    func silentWhenFreed() throws {
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.logsEvents = false
        config.trapsOnMemoryOutstandingAtDrop = true
        let mm = try MemorySystem(config)
        var held: [UnsafeMutableRawPointer] = []
        for size in [16, 64, 5000, 100_000, 5 << 20] { held.append(try #require(mm.allocate(byteCount: size))) }
        for p in held { mm.deallocate(p) }
        #expect(mm.outstandingAllocations() == nil)
    }
}

@Suite("The allocator's own threads")
struct SystemThreadTests {
    @Test("they run marked as inside the allocator, so the process allocator serves their allocations from glibc")
    func markedInsideAllocator() throws {
        let seen = Atomic<UInt64>(.max)
        let thread = try #require(SystemThread.start { seen.store(cmm_thread_slots_get().pointee.mallocDepth, ordering: .relaxed) })
        pthread_join(thread, nil)
        #expect(seen.load(ordering: .relaxed) == 1)
        #expect(cmm_thread_slots_get().pointee.mallocDepth == 0)  // the starting thread is not marked
    }
}

// SPDX-License-Identifier: Apache-2.0
import CMMShims
@testable import MM
import Synchronization
import Testing

@Suite("Groups and OOM", .timeLimit(.minutes(1)))
struct OOMTests {
    @Test("usage is charged hierarchically through policy.group and .charging scopes, and uncharged on free")
    func charging() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let parent = mm.makeGroup(name: "db")
        let child = mm.makeGroup(name: "db-cache", parent: parent)
        var policy = AllocationPolicy.standard
        policy.group = child
        let a = try #require(mm.allocate(byteCount: 8192, policy: policy))
        let b = try #require(withAllocationScope(.charging(parent)) { mm.allocate(byteCount: 4096) })
        let c = try #require(withAllocationScope(.charging(parent)) { mm.allocatePages(order: 0) })  // fast path steps aside
        #expect(child.usage == 8192 && child.ownUsage == 8192)
        #expect(parent.usage == 8192 + 8192 && parent.ownUsage == 8192)
        mm.deallocate(a)
        mm.deallocate(b)
        mm.freePages(c, order: 0)
        #expect(child.usage == 0 && parent.usage == 0)
        #expect(mm._invariantViolations() == [])
    }

    @Test("the page fast path steps aside while a closure charging scope is active anywhere, and comes back after")
    func chargingScopeClosesTheGate() async {
        // In a process of its own: other tests' charging scopes would keep the gate closed.
        await #expect(processExitsWith: .success) {
            let (mm, group, open) = gateTestSystem()
            precondition(mm.pages.gate.pageThreshold.pointee.load(ordering: .relaxed) == open)
            withAllocationScope(.charging(group)) {
                precondition(ChargingScopes.isActive)
                precondition(mm.pages.gate.pageThreshold.pointee.load(ordering: .relaxed) == .max, "gate open in a charging scope")
                let p = mm.allocatePages(order: 0)!
                precondition(group.usage == 4096, "the page was not charged")
                mm.freePages(p, order: 0)
            }
            precondition(!ChargingScopes.isActive)
            precondition(mm.pages.gate.pageThreshold.pointee.load(ordering: .relaxed) == open, "gate still closed")
        }
    }

    @Test("a thread-only charging scope (a token, withThreadAllocationScope) closes its own thread's fast paths and leaves the gate open for every other thread")
    func threadChargingScopeClosesOnlyItsThread() async {
        // In a process of its own: another test's closure charging scope would close the gate.
        await #expect(processExitsWith: .success) {
            let (mm, group, open) = gateTestSystem()
            // Warm this thread's magazine and page list, so that an open fast path would serve
            // the requests below without charging them.
            mm.deallocate(mm.allocate(byteCount: 64)!)
            mm.freePages(mm.allocatePages(order: 0)!, order: 0)
            func chargedRequests(_ scopeName: String) {
                precondition(!ChargingScopes.isActive, "\(scopeName): counted as a scope every thread must see")
                precondition(mm.pages.gate.pageThreshold.pointee.load(ordering: .relaxed) == open,
                             "\(scopeName): the gate closed for every thread")
                precondition(mm.pages.gate.isObjectPathOpen, "\(scopeName): the object gate closed for every thread")
                let object = mm.allocate(byteCount: 64)!
                let page = mm.allocatePages(order: 0)!
                precondition(group.usage == 64 + 4096, "\(scopeName): served by this thread's fast path, uncharged (usage \(group.usage))")
                // Another thread meanwhile is outside the scope: nothing it allocates is charged.
                let other = BackgroundThread {
                    let q = mm.allocate(byteCount: 64)!
                    precondition(group.usage == 64 + 4096, "\(scopeName): another thread's allocation was charged")
                    mm.deallocate(q)
                }
                other.join()
                mm.deallocate(object)
                mm.freePages(page, order: 0)
                precondition(group.usage == 0, "\(scopeName): not uncharged")
            }
            let token = AllocationScope.enter(.charging(group))
            chargedRequests("a token")
            token.exit()
            withThreadAllocationScope(.charging(group)) { chargedRequests("withThreadAllocationScope") }
            // Out of the scopes, this thread's fast paths serve it again, uncharged.
            let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
            precondition(slots.pointee.threadChargingScopes == 0)
            precondition(slots.pointee.objectCachesForFastPath == slots.pointee.objectCaches, "fast path still closed")
            let p = mm.allocate(byteCount: 64)!
            precondition(group.usage == 0, "charged outside the scope")
            mm.deallocate(p)
        }
    }

    @Test("the victim is the highest ownUsage + adjust × capacity/1000, called once, and its memory is reused")
    func victimChoice() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        let killedNames = Locked<[String]>([])
        let big = mm.makeGroup(name: "big", onOOMKill: { g in killedNames.withLock { $0.append(g.name) } })
        let favoured = mm.makeGroup(name: "favoured", oomScoreAdjust: 500, onOOMKill: { g in killedNames.withLock { $0.append(g.name) } })
        let bigCache = TestCache(mm, name: "big", group: big)
        let favouredCache = TestCache(mm, name: "favoured", group: favoured)
        bigCache.fill(400, policy: .atomic)         // 1.6 MiB
        favouredCache.fill(250, policy: .atomic)    // 1 MiB + 500 × 4 MiB / 1000 = 3 MiB
        _ = fillPages(mm, .atomic)
        // The victim releases its memory when told, on another thread.
        let worker = BackgroundWorker()
        let killed = Atomic<Int>(0)
        let handler = mm.slowPath.hooks.withLock { $0.outOfMemory }
        mm.slowPath.hooks.withLock { hooks in
            hooks.outOfMemory = { context in
                let outcome = handler(context)
                if case .killed(let name) = outcome, name == "favoured" {
                    killed.wrappingAdd(1, ordering: .relaxed)
                    worker.run { favouredCache.clear() }
                }
                return outcome
            }
        }
        let succeeded = Atomic<Bool>(false)
        watchdog("a .standard request that needs an OOM kill") {
            if let p = mm.allocate(byteCount: 4096) {
                succeeded.store(true, ordering: .relaxed)
                mm.deallocate(p)
            }
        }
        worker.join()
        let ok = succeeded.load(ordering: .relaxed)
        #expect(ok)
        #expect(killedNames.withLock { $0 } == ["favoured"])
        #expect(killed.load(ordering: .relaxed) == 1)
        let kill = recorder.oomKills.first
        #expect(kill?.victim == "favoured")
        #expect(kill?.score == 250 * 4096 + 500 * ((4 << 20) / 1000))
        #expect(mm.statistics()[counter: "oom_kill"] == 1)
    }

    @Test("an unkillable group: .standard fails, .retryForever keeps waiting and reporting; restricted requests never OOM")
    func unkillable() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        let g = mm.makeGroup(name: "precious", oomScoreAdjust: -1000)
        let cache = TestCache(mm, group: g)
        cache.fill(2000, policy: .standard)
        _ = fillPages(mm, .standard)
        let before = mm.statistics()[counter: "oom_no_victim"]
        #expect(mm.allocate(byteCount: 4096) == nil)
        #expect(mm.statistics()[counter: "oom_no_victim"] == before + 1)
        _ = withAllocationScope(.excluding(.filesystem)) { mm.allocate(byteCount: 4096) }
        #expect(mm.statistics()[counter: "oom_no_victim"] == before + 1)  // restricted: never invoked
        let waiter = BackgroundThread { _ = mm.allocateGuaranteed(byteCount: 4096) }
        sleep(milliseconds: 200)
        #expect(!waiter.isFinished)
        #expect(!recorder.stalls.isEmpty)
        cache.clear()
        watchdog("the retryForever waiter after memory came back") { waiter.join() }
    }

    @Test("a victim that does not release memory within oomReapTimeout is reported stuck and skipped")
    func stuckVictim() throws {
        let mm = try makeExactSystem { $0.oomReapTimeout = .milliseconds(50) }
        let recorder = EventRecorder(mm)
        let stubborn = mm.makeGroup(name: "stubborn", oomScoreAdjust: 900)
        let other = mm.makeGroup(name: "other")
        let stubbornCache = TestCache(mm, group: stubborn)
        let otherCache = TestCache(mm, group: other)
        stubbornCache.fill(50, policy: .atomic)
        otherCache.fill(300, policy: .atomic)
        _ = fillPages(mm, .atomic)
        #expect(mm.reclaim.outOfMemory(trigger: "test") == .killed(victim: "stubborn"))
        #expect(stubborn.isOOMVictim)
        // Within the reap timeout the victim is waited for: no second kill, not counted as one.
        #expect(mm.reclaim.outOfMemory(trigger: "test") == .waitingForVictim(victim: "stubborn"))
        #expect(mm.statistics()[counter: "oom_kill"] == 1)
        #expect(mm.statistics()[counter: "oom_victim_wait"] == 1)
        sleep(milliseconds: 80)
        #expect(mm.reclaim.outOfMemory(trigger: "test") == .killed(victim: "other"))
        let stuck = recorder.stuckVictims
        #expect(stuck.map(\.victim) == ["stubborn"])
    }

    @Test("a victim's allocations may use the .oomVictim reserve (down to min/8)")
    func victimTier() throws {
        let mm = try makeExactSystem()
        let g = mm.makeGroup(name: "victim")
        let cache = TestCache(mm, group: g)
        cache.fill(10, policy: .atomic)
        _ = fillPages(mm, .atomic)  // down to min/4 = 64 free pages
        _ = mm.reclaim.outOfMemory(trigger: "test")
        #expect(g.isOOMVictim)
        #expect(cache.fill(1000, policy: .standard) == 32)  // from 64 down to min/8 = 32
    }

    @Test("OOMPolicy.abort: no victim left stops the process with a full report")
    func abort() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let mm = try makeExactSystem { $0.oomPolicy = .abort }
            let g = mm.makeGroup(name: "pinned", oomScoreAdjust: -1000)
            TestCache(mm, group: g).fill(5000, policy: .standard)
            _ = mm.allocate(byteCount: 4096)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("out of memory and no OOM victim left (OOMPolicy.abort)"), "\(stderr)")
        #expect(stderr.contains("pinned: usage"))
    }
}

extension OOMOutcome: Equatable {
    public static func == (a: OOMOutcome, b: OOMOutcome) -> Bool {
        switch (a, b) {
        case (.killed(let x), .killed(let y)): return x == y
        case (.waitingForVictim(let x), .waitingForVictim(let y)): return x == y
        case (.noVictim, .noVictim): return true
        default: return false
        }
    }
}

@Suite("OOM under group churn", .timeLimit(.minutes(1)))
struct OOMChurnTests {
    @Test("two threads create groups and allocate until OOM kills: no request waits for the reap timeout, none fails")
    func churn() throws {
        var config = MemoryConfiguration(capacity: 32 << 20)
        config.logsEvents = false
        // Long enough that a waiter reaches it only when the memory it waits for is never
        // released (a request waiting for its own group), never because the machine is slow.
        config.oomReapTimeout = .seconds(30)
        let mm = try MemorySystem(config)
        let rounds = 30
        let finished = watchdog("group churn with OOM kills", seconds: 50) {
            runThreads(2) { t in
                for round in 0..<rounds {
                    let killed = Atomic<Bool>(false)
                    let g = mm.makeGroup(name: "t\(t)-\(round)", onOOMKill: { _ in killed.store(true, ordering: .relaxed) })
                    var policy = AllocationPolicy.standard
                    policy.group = g
                    var held: [UnsafeMutableRawPointer] = []
                    for _ in 0..<400 {
                        if killed.load(ordering: .relaxed) { break }
                        guard let p = mm.allocate(byteCount: 65536, policy: policy) else { break }
                        held.append(p)
                    }
                    for p in held { mm.deallocate(p) }
                }
            }
        }
        #expect(finished)
        let s = mm.statistics()
        #expect(s[counter: "oom_kill"] > 0)
        // Each thread's own group is killed while it allocates: its request fails or uses the
        // victim reserve at once; the other thread's request waits only while memory is released.
        #expect(s[counter: "oom_reap_timeouts"] == 0)
        #expect(s[counter: "fail_standard"] <= s[counter: "oom_kill"], "victims' own requests may fail, nobody else's")
        #expect(s.groups.isEmpty)
    }
}

/// For the exit tests of the fast-path gate: a quiet 16 MiB system, one group
/// in it, and the page fast path's threshold while the gate is open (`low`).
private func gateTestSystem() -> (MemorySystem, MemoryGroup, Int) {
    var config = MemoryConfiguration(capacity: 16 << 20)
    config.logsEvents = false
    config.backgroundReclaim = false
    let mm = try! MemorySystem(config)
    return (mm, mm.makeGroup(name: "g"), mm.pages.watermarks.low)
}

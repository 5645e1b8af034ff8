// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization
import Testing

/// R1–R7 as pure resolution (`AllocationContext.resolve`) and through real
/// allocations. Each test fails if its rule is broken.
@Suite("Resolution rules R1–R7")
struct ResolutionRuleTests {
    func resolve(_ policy: AllocationPolicy = .standard, guarantee: Guarantee? = nil,
                 _ scope: AllocationScope = .none) -> AllocationContext {
        AllocationContext.resolve(request: "test", policy: policy, guarantee: guarantee, scope: scope, site: nil)
    }

    // MARK: R1

    @Test("R1: restrictions accumulate; an inner scope never lifts an outer one")
    func r1Accumulate() {
        let outer = AllocationScope.excluding(.filesystem).union(.noDirectReclaim)
        let combined = outer.union(.none).union(.quiet)
        #expect(combined.excludes(.filesystem))
        #expect(combined.forbidsDirectReclaim)
        #expect(combined.isQuiet)
        withAllocationScope(.nonBlocking) {
            withAllocationScope(.none) {
                withAllocationScope(.excluding(.io)) {
                    let current = AllocationScope.current
                    #expect(current.isNonBlocking)
                    #expect(current.excludes(.io) && current.excludes(.filesystem))
                }
                #expect(AllocationScope.current.isNonBlocking)
                #expect(!AllocationScope.current.excludes(.io))
            }
        }
        #expect(AllocationScope.current == .none)
    }

    @Test("R1: excluding .io excludes .filesystem and user domains within it; not the other way round")
    func r1Hierarchy() {
        let blockCache = ReclaimDomain("block-cache", within: .filesystem)
        let netCache = ReclaimDomain("net-cache")
        #expect(AllocationScope.excluding(.io).excludes(blockCache))
        #expect(AllocationScope.excluding(.filesystem).excludes(blockCache))
        #expect(!AllocationScope.excluding(.filesystem).excludes(.io))
        #expect(!AllocationScope.excluding(.io).excludes(netCache))
        #expect(ReclaimDomain("block-cache", within: .filesystem) == blockCache)
        #expect(ReclaimDomain("block-cache") != blockCache)
        #expect(blockCache.isWithin(.io))
    }

    @Test("R1: a .nonBlocking scope makes a .standard call non-blocking: no reclaim, no wait")
    func r1NonBlockingScope() throws {
        let mm = try makeExactSystem()
        let hooks = HookCounter(mm)
        _ = fillPages(mm)
        let p = withAllocationScope(.nonBlocking) { mm.allocatePages(order: 0, policy: .standard) }
        #expect(p == nil)
        #expect(hooks.reclaimCount == 0)
        #expect(resolve(.standard, .nonBlocking).blocking == false)
    }

    // MARK: R2

    @Test("R2: a guarantee beats a .nonBlocking scope: it blocks, never returns nil, one conflict per call site",
          .timeLimit(.minutes(1)))
    func r2GuaranteeBeatsScope() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        let held = fillPages(mm, .standard).map { UInt(bitPattern: $0) }  // down to min
        let freer = BackgroundThread {
            sleep(milliseconds: 100)
            for a in held.prefix(8) { mm.freePages(UnsafeMutableRawPointer(bitPattern: a)!, order: 0) }
        }
        let got = Atomic<Int>(0)
        watchdog("two guaranteed calls in a nonBlocking scope") {
            withAllocationScope(.nonBlocking) {
                for _ in 0..<2 {  // one call site
                    _ = mm.allocateGuaranteed(byteCount: 4096)
                    got.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        freer.join()
        let count = got.load(ordering: .relaxed)
        #expect(count == 2)
        #expect(recorder.conflicts.count == 1)
        #expect(recorder.conflicts.first?.resolution.contains("R2") == true)
        let context = resolve(guarantee: .retryForever, .nonBlocking)
        #expect(context.blocking && !context.directReclaim)
    }

    // MARK: R3

    @Test("R3: a guarantee scope upgrades only blocking .standard calls", arguments: [
        (AllocationPolicy.standard, true), (.failFast, false), (.retryWhileProgress, false), (.nonBlocking, false), (.atomic, false),
    ])
    func r3Upgrade(policy: AllocationPolicy, upgraded: Bool) {
        #expect((resolve(policy, .retryForever).guarantee != nil) == upgraded)
        #expect((resolve(policy, .useReserves).guarantee != nil) == upgraded)
    }

    @Test("R3: an optimistic NOWAIT call inside a NOFAIL scope still fails fast (Michal Hocko's printk case)")
    func r3NowaitInsideNofail() throws {
        let mm = try makeExactSystem()
        let hooks = HookCounter(mm)
        _ = fillPages(mm, .atomic)
        withAllocationScope(.useReserves) {
            #expect(mm.allocate(byteCount: 64, policy: .nonBlocking) == nil)
            #expect(mm.allocate(byteCount: 64, policy: .failFast) == nil)
        }
        #expect(hooks.reclaimCount == 1)  // failFast made exactly one round; nonBlocking none
    }

    // MARK: R4

    @Test("R4: between nested guarantee scopes the innermost wins, closures and tokens alike")
    func r4Innermost() {
        withAllocationScope(.useReserves) {
            #expect(AllocationScope.current.upgradeGuarantee == .useReserves)
            withAllocationScope(.retryForever) {
                #expect(AllocationScope.current.upgradeGuarantee == .retryForever)
                let token = AllocationScope.enter(.useReserves)
                #expect(AllocationScope.current.upgradeGuarantee == .useReserves)
                withAllocationScope(.retryForever) {
                    #expect(AllocationScope.current.upgradeGuarantee == .retryForever)
                }
                token.exit()
            }
            #expect(AllocationScope.current.upgradeGuarantee == .useReserves)
        }
    }

    @Test("R4: the call's explicit guarantee beats the scope's")
    func r4CallWins() {
        #expect(resolve(guarantee: .retryForever, .useReserves).guarantee == .retryForever)
        #expect(resolve(guarantee: .useReserves, .retryForever).guarantee == .useReserves)
        #expect(!resolve(guarantee: .retryForever, .useReserves).mayInvokeOOM)
    }

    // MARK: R5

    @Test("R5: inside .reclaiming there is never direct reclaim, and the tier is .emergency")
    func r5Reclaiming() throws {
        let mm = try makeExactSystem()
        let recorder = EventRecorder(mm)
        let hooks = HookCounter(mm)
        _ = fillPages(mm, .atomic)
        let got = withAllocationScope(.reclaiming) { fillPages(mm, .standard) }
        #expect(got.count == 64)  // from min/4 down to 0
        #expect(hooks.reclaimCount == 0)
        // A guaranteed call there is a reported conflict; with nothing left it waits.
        let c = resolve(guarantee: .retryForever, .reclaiming)
        #expect(c.tier == .emergency && !c.directReclaim && c.conflict?.contains("R5") == true)
        mm.freePages(got[0], order: 0)
        watchdog("a guaranteed call inside reclaim") {
            let p = withAllocationScope(.reclaiming) { mm.allocateGuaranteed(byteCount: 100) }
            mm.deallocate(p)
        }
        #expect(recorder.conflicts.count == 1)
    }

    // MARK: R6

    @Test("R6: only complete reclaim may invoke the OOM handler", arguments: [
        (AllocationPolicy.standard, Guarantee?.none, AllocationScope.none, true),
        (.standard, nil, .excluding(.filesystem), false),
        (.standard, nil, .noDirectReclaim, false),
        (.retryWhileProgress, nil, .none, false),
        (.failFast, nil, .none, false),
        (.standard, .retryForever, .none, false),
        (.standard, .useReserves, .none, true),
        (.standard, .useReserves, .excluding(.io), false),
        (.standard, nil, .reclaiming, false),
    ])
    func r6Resolution(policy: AllocationPolicy, guarantee: Guarantee?, scope: AllocationScope, oom: Bool) {
        #expect(resolve(policy, guarantee: guarantee, scope).mayInvokeOOM == oom)
    }

    @Test("R6: a restricted request never invokes the OOM handler itself; an unrestricted one does")
    func r6Behaviour() throws {
        let mm = try makeExactSystem()
        let hooks = HookCounter(mm)
        _ = fillPages(mm, .atomic)
        let restricted = withAllocationScope(.excluding(.filesystem)) { mm.allocate(byteCount: 4096) }
        #expect(restricted == nil)
        #expect(hooks.oomCount == 0)
        #expect(mm.allocate(byteCount: 4096) == nil)
        #expect(hooks.oomCount == 1)
    }

    // MARK: R7

    @Test("R7: non-blocking requests never run reclaim and never sleep, but wake the background reclaimer")
    func r7() throws {
        let mm = try makeExactSystem()
        let hooks = HookCounter(mm)
        _ = fillPages(mm, .atomic)
        let wakes = mm.statistics()[counter: "low_watermark_wake"]
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for _ in 0..<100 { #expect(mm.allocate(byteCount: 64, policy: .atomic) == nil) }
        }
        #expect(hooks.reclaimCount == 0)
        #expect(mm.statistics()[counter: "low_watermark_wake"] == wakes + 100)
        #expect(mm.statistics()[counter: "guaranteed_waits"] == 0)
        #expect(elapsed < .seconds(5))  // a watchdog, not a timing test: it would hang if it slept
    }
}

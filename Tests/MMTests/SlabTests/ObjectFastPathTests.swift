// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Synchronization
import Testing

/// The object free fast path's checks and its per-thread fast-path key:
/// the slot test is exact for every geometry a cache can have, and the
/// system's gate reaches every attached thread's magazines at once.
@Suite("Object fast path: the slot test and the per-thread fast-path key")
struct ObjectFastPathTests {
    @Test("the slot test accepts exactly the start of each slot, for every stride a cache can have")
    func slotTestIsExact() {
        var geometries: [(size: Int, alignment: Int, redZone: Bool)] = []
        for size in Swift.stride(from: 8, through: 1024, by: 8) { geometries.append((size, 8, false)) }
        for size in Swift.stride(from: 1032, through: 8192, by: 104) { geometries.append((size, 8, false)) }
        for size in kmallocSizes { geometries.append((size, 8, false)); geometries.append((size, 8, true)) }
        for size in [24, 40, 96, 100, 200, 333, 4000] { geometries.append((size, 64, true)) }
        var checked = 0
        for g in geometries {
            guard let layout = ObjectLayout(size: g.size, alignment: g.alignment, redZone: g.redZone, secret: 1) else {
                Issue.record("no layout for \(g)")
                continue
            }
            let slabBytes = pageSize << layout.slabOrder
            #expect(slabBytes - layout.objectsPerSlab * layout.stride < layout.stride,
                    "the tail of a slab of \(g) is a whole stride or more")
            for n in 0..<slabBytes {
                let expected = n % layout.stride == 0 && n / layout.stride < layout.objectsPerSlab
                if ObjectLayout.isSlotStart(UInt(n), multiplier: layout.slotMultiplier, bound: layout.slotBound) != expected {
                    Issue.record("stride \(layout.stride): offset \(n) is \(expected ? "" : "not ")a slot start, the test says otherwise")
                    return
                }
            }
            checked += 1
        }
        #expect(checked == geometries.count)
    }

    @Test("usableSize answers live objects at once and leaves every bad object pointer to validation", arguments: kmallocSizes)
    func usableSizeChecks(size: Int) throws {
        let mm = try makeSystem(capacity: 16 << 20, hardening: .report)
        let recorder = EventRecorder(mm)
        let fast = mm.objectFastPath
        func fastAnswer(_ p: UnsafeRawPointer) -> Int? {
            let offset = UInt(bitPattern: p) &- UInt(bitPattern: fast.directMap)
            return fast.usableSize(p, offset: offset, owner: fast.owner(atOffset: offset & ~UInt(pageSize - 1)))
        }
        let p = try #require(mm.allocate(byteCount: size))
        let q = try #require(mm.allocate(byteCount: size))
        #expect(fastAnswer(p) == size && mm.usableSize(of: p) == size)
        // Interior, and (for objects of 16 bytes or more) a freed object: the fast check declines,
        // validation names the problem, the answer is 0.
        #expect(fastAnswer(p + 8) == nil && mm.usableSize(of: p + 8) == 0)
        mm.deallocate(q)
        #expect(fastAnswer(q) == nil && mm.usableSize(of: q) == 0)
        #expect(recorder.violations.map(\.kind) == [.interiorPointer, .doubleFree])
        mm.deallocate(p)
        #expect(mm._invariantViolations() == [])
    }

    @Test("a thread without magazines meets the empty record: every fast path misses, nothing is written to it")
    func emptyRecord() throws {
        let mm = try makeSystem()
        let recordMiss = Atomic<Bool>(false)
        let served = Atomic<Bool>(false)
        runThreads(1) { _ in
            // A fresh thread: its slots hold the shared read-only empty record, not NULL.
            let m = ObjectMagazines.currentOrEmpty
            recordMiss.store(ObjectMagazines.current == nil && m.header == ObjectMagazines.currentOrEmptyForFastPath.header
                             && UnsafeMutableRawPointer(m.header) == MagazinesKind.emptyRecord && m.fastPathKey == 0,
                             ordering: .relaxed)
            // Its first request misses the fast path and is served by the slow path, which makes a record.
            let p = mm.allocate(byteCount: 32)
            served.store(p != nil && ObjectMagazines.current != nil, ordering: .relaxed)
            if let p { mm.deallocate(p) }
        }
        let sawEmpty = recordMiss.load(ordering: .relaxed)
        let wasServed = served.load(ordering: .relaxed)
        #expect(sawEmpty)
        #expect(wasServed)
        mm._checkInvariants()
    }

    @Test("the empty record is read-only: a write to it crashes instead of corrupting every thread")
    func emptyRecordIsReadOnly() async {
        await #expect(processExitsWith: .failure) {
            MagazinesKind.emptyRecord!.storeBytes(of: 1, toByteOffset: 64 * 3 + 8, as: UInt.self)
        }
    }

    /// Spins until `phase` reaches `value`; records a failure after 20 s instead of hanging.
    private func wait(for value: Int, _ phase: borrowing Atomic<Int>, _ who: String) -> Bool {
        let deadline = ContinuousClock.now + .seconds(20)
        while phase.load(ordering: .acquiring) < value {
            if ContinuousClock.now > deadline {
                Issue.record("watchdog: \(who) waited 20 s for phase \(value); the other thread is stuck")
                return false
            }
            sched_yield()
        }
        return true
    }

    @Test("closing the gate closes every attached thread's magazines at once, and opening reopens them")
    func gateReachesOtherThreads() throws {
        let mm = try makeSystem()
        let systemID = mm.objectFastPath.systemID
        let phase = Atomic<Int>(0)
        let whileClosed = Atomic<Bool>(true)
        let whileOpen = Atomic<Bool>(false)
        let keys = Locked<[[UInt64]]>([])
        @Sendable func attachedKeys() -> [UInt64] {
            SlabAllocator.magazines.withAttached(to: systemID) { all in all.map(\.fastPathKey) }
        }
        runThreads(2) { role in
            if role == 0 {  // the thread that closes and opens the gate
                guard wait(for: 1, phase, "the closing thread") else { return }
                mm.failNthAllocation(1000)  // arms this thread only; the gate closes for every thread
                keys.withLock { $0.append(attachedKeys()) }
                phase.store(2, ordering: .releasing)
                guard wait(for: 3, phase, "the closing thread") else { return }
                mm.failNthAllocation(0)
                keys.withLock { $0.append(attachedKeys()) }
                phase.store(4, ordering: .releasing)
            } else {  // a thread whose magazines are warm
                mm.deallocate(mm.allocate(byteCount: 16)!)
                phase.store(1, ordering: .releasing)
                guard wait(for: 2, phase, "the warm thread") else { return }
                let p = mm.objectFastPath.allocate(SizeClass.index(forBytes: 16))
                whileClosed.store(p != nil, ordering: .relaxed)
                if let p { mm.deallocate(p) }
                phase.store(3, ordering: .releasing)
                guard wait(for: 4, phase, "the warm thread") else { return }
                let q = mm.objectFastPath.allocate(SizeClass.index(forBytes: 16))
                whileOpen.store(q != nil, ordering: .relaxed)
                if let q { mm.deallocate(q) }
            }
        }
        let servedWhileClosed = whileClosed.load(ordering: .relaxed)
        let servedWhileOpen = whileOpen.load(ordering: .relaxed)
        #expect(!servedWhileClosed, "the warm thread's fast path served a request while the gate was closed")
        #expect(servedWhileOpen, "the warm thread's fast path stayed closed after the gate opened")
        let seen = keys.withLock { $0 }
        try #require(seen.count == 2)
        #expect(!seen[0].isEmpty && seen[0].allSatisfy { $0 == 0 }, "keys while closed: \(seen[0])")
        #expect(!seen[1].isEmpty && seen[1].allSatisfy { $0 == systemID }, "keys after opening: \(seen[1])")
        mm._checkInvariants()
    }

    @Test("a gate opened and closed while threads allocate ends open on every thread, nothing lost")
    func gateTogglesUnderLoad() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let systemID = mm.objectFastPath.systemID
        let running = Atomic<Int>(3)
        let done = Atomic<Int>(0)
        let finalKeys = Locked<[UInt64]>([])
        runThreads(4) { role in
            if role == 0 {  // opens and closes the gate, allocating nothing itself
                var toggles = 0
                while running.load(ordering: .relaxed) > 0 || toggles < 200 {
                    mm.failNthAllocation(toggles % 2 == 0 ? 1_000_000 : 0)
                    toggles += 1
                }
                mm.failNthAllocation(0)
                done.store(1, ordering: .releasing)
            } else {
                var rng = SeededGenerator(seed: UInt64(role))
                var live: [UnsafeMutableRawPointer] = []
                for _ in 0..<20_000 {
                    if live.count < 64 && rng.next() % 3 != 0 {
                        guard let p = mm.allocate(byteCount: Int(rng.next() % 512) + 1) else {
                            Issue.record("an allocation failed with the arena nearly empty")
                            break
                        }
                        p.storeBytes(of: UInt8(role), as: UInt8.self)
                        live.append(p)
                    } else if !live.isEmpty {
                        let p = live.remove(at: Int(rng.next() % UInt64(live.count)))
                        #expect(p.load(as: UInt8.self) == UInt8(role), "an object was handed to two threads")
                        mm.deallocate(p)
                    }
                }
                for p in live { mm.deallocate(p) }
                running.wrappingSubtract(1, ordering: .relaxed)
                // Still attached: once the gate's last change is done, this thread's key must be the system's.
                guard wait(for: 1, done, "a worker") else { return }
                finalKeys.withLock { $0.append(ObjectMagazines.current?.fastPathKey ?? 0) }
            }
        }
        #expect(finalKeys.withLock { $0 } == [systemID, systemID, systemID])
        mm._checkInvariants()
        #expect(mm.statistics().slabCaches.allSatisfy { $0.activeObjects == 0 },
                "objects still allocated after every thread freed all it allocated")
    }
}

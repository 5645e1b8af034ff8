// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// Counters of the page allocator that change under the zone lock.
/// Kernel analogue: the page-allocator lines of `/proc/vmstat`.
struct ZoneCounters: Sendable {
    var pgalloc = 0, pgfree = 0, pgallocFail = 0
    var pcpRefill = 0, pcpDrain = 0
    var lowWatermarkWake = 0
    var pgrelease = 0, releaseRuns = 0
}

/// The zone lock's contents: the buddy lists and their counters.
struct ZoneState: Sendable {
    var buddy: BuddyZone
    var counters = ZoneCounters()
    /// Allocation and free counts of per-thread lists that have been detached.
    var foldedAllocated = 0, foldedFreed = 0
}

/// A per-thread list set attached to a system, as a hashable handle.
struct ListsHandle: Hashable, @unchecked Sendable {  // the raw pointer is only dereferenced under the lists lock
    let base: UnsafeMutableRawPointer
}

/// How the allocator responds to a hardening violation.
public enum HardeningAction: Sendable, Hashable {
    /// Report the event, then stop the process with a message naming the
    /// pointer and the problem (the default, like `slab_debug` panics).
    case trap
    /// Report the event and ignore the operation; nothing is freed or lost.
    case report
}

/// The slow paths of the page allocator: everything that takes the zone lock.
/// Kernel analogue: `mm/page_alloc.c` below the pcp fast path.
@usableFromInline
final class PageAllocator: @unchecked Sendable {  // immutable after init except through Locked/Atomic members
    let systemID: UInt64
    let arena: Arena
    let watermarks: PageWatermarks
    let zone: Locked<ZoneState>
    /// Free pages in the buddy lists, published for the lock-free watermark check.
    let freePagesHot: UnsafeMutablePointer<Atomic<Int>>
    /// The fast path serves requests while `freePagesHot` is above this:
    /// `low` normally, `Int.max` while fault injection must see every call.
    let fastPathThreshold: UnsafeMutablePointer<Atomic<Int>>
    /// Reasons the fast path must see no request: fault injection configured
    /// or armed on some thread (set by the slow path).
    let fastPathHolds = Atomic<Int>(0)
    /// The fewest free pages the buddy lists have held since the system was created.
    let lowestFreePages = Atomic<Int>(.max)
    /// `systemID` while the object layer's fast path is open,
    /// `ObjectMagazines.closedKey` while object requests must take the slow
    /// path too (the object layer has no watermark check; its fast path
    /// compares this with the magazines' owner instead).
    let objectFastPathKey: UnsafeMutablePointer<Atomic<UInt64>>
    /// Live allocations per call site, when allocation profiling is on.
    let profile: AllocationProfile?

    /// Opens or closes the fast path: closed while fault injection needs to
    /// see every call or a charging scope is active anywhere.
    func refreshFastPath() {
        let closed = fastPathHolds.load(ordering: .relaxed) > 0 || ChargingScopes.isActive
        fastPathThreshold.pointee.store(closed ? Int.max : watermarks.low, ordering: .relaxed)
        objectFastPathKey.pointee.store(closed ? ObjectMagazines.closedKey : systemID, ordering: .relaxed)
    }

    /// Blocked allocations wait here; every free to the buddy lists wakes them.
    let waitQueue = FreeWaitQueue()
    let listLimits: [Int]
    let attachedLists = Locked<Set<ListsHandle>>([])

    func withAttached<R: Sendable>(_ body: (Set<ListsHandle>) -> R) -> R { attachedLists.withLock { body($0) } }
    let events: EventHub
    let hardeningAction: HardeningAction
    let releaseOrder: Int?
    let releaseDelayTicks: UInt32
    let lastReleasePassTick = Atomic<UInt32>(0)
    private let startTime: timespec
    let invalidRequests = Atomic<Int>(0)
    let hardeningViolations = Atomic<Int>(0)
    /// Called when free memory falls below `low` (the background reclaimer plugs in here).
    let lowWatermarkHook = Locked<(@Sendable () -> Void)?>(nil)
    /// The system's groups, to uncharge freed blocks.
    let groups: OOMKiller

    init(systemID: UInt64, arena: Arena, watermarks: Watermarks, perThreadLists: Bool, events: EventHub,
         hardeningAction: HardeningAction, releaseOrder: Int?, releaseDelay: Duration, groups: OOMKiller,
         profile: AllocationProfile?) {
        self.systemID = systemID
        self.profile = profile
        objectFastPathKey = .allocate(capacity: 1)
        objectFastPathKey.initialize(to: Atomic(systemID))
        self.groups = groups
        self.arena = arena
        self.watermarks = PageWatermarks(watermarks)
        self.events = events
        self.hardeningAction = hardeningAction
        self.releaseOrder = releaseOrder
        let ms = releaseDelay.components.seconds * 1000 + releaseDelay.components.attoseconds / 1_000_000_000_000_000
        self.releaseDelayTicks = UInt32(clamping: ms)
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        startTime = now
        // Per-thread lists scale with the arena so that small arenas do not
        // strand a large share of their memory in thread caches.
        let pagesPer = arena.pageCount / 256
        let maxima = [perThreadListLimits.0, perThreadListLimits.1, perThreadListLimits.2, perThreadListLimits.3]
        listLimits = (0..<perThreadOrderCount).map { order in
            perThreadLists ? Swift.min(maxima[order], Swift.max(2, pagesPer >> order)) : 0
        }
        zone = Locked(ZoneState(buddy: BuddyZone(frames: arena.frames, pageCount: arena.pageCount, tick: 0)))
        freePagesHot = .allocate(capacity: 1)
        freePagesHot.initialize(to: Atomic(arena.pageCount))
        fastPathThreshold = .allocate(capacity: 1)
        fastPathThreshold.initialize(to: Atomic(PageWatermarks(watermarks).low))
    }

    deinit {
        freePagesHot.deinitialize(count: 1)
        freePagesHot.deallocate()
        fastPathThreshold.deinitialize(count: 1)
        fastPathThreshold.deallocate()
        objectFastPathKey.deinitialize(count: 1)
        objectFastPathKey.deallocate()
    }

    /// Milliseconds since the system was created (wraps after 49 days; only differences are used).
    var tick: UInt32 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let ms = (now.tv_sec - startTime.tv_sec) * 1000 + (now.tv_nsec - startTime.tv_nsec) / 1_000_000
        return UInt32(truncatingIfNeeded: ms)
    }

    @inline(__always)
    private func publish(_ state: borrowing ZoneState) {
        let free = state.buddy.freePages
        freePagesHot.pointee.store(free, ordering: .relaxed)
        // Written only under the zone lock: a plain compare and store is enough.
        if free < lowestFreePages.load(ordering: .relaxed) { lowestFreePages.store(free, ordering: .relaxed) }
    }

    // MARK: Per-thread lists

    /// The calling thread's lists, attached to this system (returning any
    /// blocks they held for another system first).
    func listsForCurrentThread() -> PerThreadPageLists {
        let lists = PerThreadPageLists.currentOrCreate()
        if lists.systemID != systemID {
            SystemRegistry.shared.detach(lists)
            attachedLists.withLock { _ = $0.insert(ListsHandle(base: lists.base)) }
            lists.systemID = systemID
        }
        if lists.drainRequest.pointee.load(ordering: .relaxed) != 0 {
            lists.drainRequest.pointee.store(0, ordering: .relaxed)
            drain(lists, keepingFraction: 0)
        }
        return lists
    }

    /// Returns every block of `lists` and forgets them. Called on the owning
    /// thread (thread exit, or switching to another system).
    func detach(_ lists: PerThreadPageLists) {
        attachedLists.withLock { attached in
            attached.remove(ListsHandle(base: lists.base))
            zone.withLock { state in
                returnBlocks(of: lists, keepingFraction: 0, into: &state)
                state.foldedAllocated += lists.allocatedCounter.pointee.load(ordering: .relaxed)
                state.foldedFreed += lists.freedCounter.pointee.load(ordering: .relaxed)
                lists.allocatedCounter.pointee.store(0, ordering: .relaxed)
                lists.freedCounter.pointee.store(0, ordering: .relaxed)
                publish(state)
            }
        }
        waitQueue.notifyFreed()
    }

    /// Returns the coldest blocks of every order in `lists` to the zone,
    /// keeping `keepingFraction` (0 or 1/2) of each list. Owner thread only.
    func drain(_ lists: PerThreadPageLists, keepingFraction: Int) {
        // Waiters are woken only when blocks came back: two threads whose direct
        // reclaim finds nothing must not wake each other into a busy loop.
        guard lists.cachedPages > 0 else { return }
        zone.withLock { state in
            returnBlocks(of: lists, keepingFraction: keepingFraction, into: &state)
            publish(state)
        }
        waitQueue.notifyFreed()
    }

    private func returnBlocks(of lists: PerThreadPageLists, keepingFraction keepHalf: Int, into state: inout ZoneState) {
        let tick = self.tick
        for order in 0..<perThreadOrderCount {
            let count = lists.count(order).pointee.load(ordering: .relaxed)
            guard count > 0 else { continue }
            let keep = keepHalf == 0 ? 0 : count / 2
            let give = count - keep
            let slots = lists.slots(order)
            for i in 0..<give {  // the bottom of the stack is the coldest
                let pfn = Int(slots[i])
                arena.frames[pfn].state = PageState.tail.rawValue
                state.buddy.put(pfn, order: order, tick: tick)
            }
            if keep > 0 { (slots).update(from: slots + give, count: keep) }
            lists.count(order).pointee.store(keep, ordering: .relaxed)
            state.counters.pcpDrain += 1
        }
    }

    /// Returns every block the calling thread caches for this system.
    func drainCallingThread() {
        if let lists = PerThreadPageLists.current, lists.systemID == systemID { drain(lists, keepingFraction: 0) }
    }

    /// Asks every thread to return its cached blocks: the calling thread's
    /// lists are drained now, the others' at their next slow path.
    /// Kernel analogue: `drain_all_pages`.
    func drainAllLists() {
        drainCallingThread()
        attachedLists.withLock { attached in
            for handle in attached {
                PerThreadPageLists(base: handle.base).drainRequest.pointee.store(1, ordering: .relaxed)
            }
        }
    }

    // MARK: Allocation

    /// Takes one block of `order` if that leaves at least `floor` free pages;
    /// when `lists` is given, also refills that order's list up to half its
    /// limit, without going below `low`. Returns the block's pfn, marked allocated.
    func takeBlock(order: Int, floor: Int, refill lists: PerThreadPageLists?) -> Int? {
        zone.withLock { state -> Int? in
            guard state.buddy.allows(order: order, floor: floor), let pfn = state.buddy.take(order: order) else {
                return nil
            }
            markAllocated(pfn, order: order)
            state.counters.pgalloc += 1 << order
            if let lists {
                let limit = listLimits[order]
                let count = lists.count(order)
                var n = count.pointee.load(ordering: .relaxed)
                let slots = lists.slots(order)
                let refillFloor = Swift.max(floor, watermarks.low)
                while n < limit / 2, state.buddy.allows(order: order, floor: refillFloor),
                      let block = state.buddy.take(order: order) {
                    arena.frames[block].state = PageState.cached.rawValue
                    slots[n] = UInt32(block)
                    n += 1
                }
                count.pointee.store(n, ordering: .relaxed)
                state.counters.pcpRefill += 1
            }
            publish(state)
            return pfn
        }
    }

    @inline(__always)
    func markAllocated(_ pfn: Int, order: Int) {
        let f = arena.frames + pfn
        f.pointee.state = PageState.allocated.rawValue
        f.pointee.order = UInt8(order)
        f.pointee.flags |= PageFrame.flagEverAllocated
    }

    /// Pops a block of `order` from the calling thread's list, if free
    /// memory is above `low` (the fast path's condition).
    func popCached(order: Int, from lists: PerThreadPageLists) -> Int? {
        guard freePagesHot.pointee.load(ordering: .relaxed) > watermarks.low else { return nil }
        let count = lists.count(order)
        let n = count.pointee.load(ordering: .relaxed)
        guard n > 0 else { return nil }
        let pfn = Int(lists.slots(order)[n - 1])
        count.pointee.store(n - 1, ordering: .relaxed)
        markAllocated(pfn, order: order)
        PerThreadPageLists.bump(lists.allocatedCounter, by: 1 << order)
        return pfn
    }

    func countFailure() {
        zone.withLock { $0.counters.pgallocFail += 1 }
    }

    /// Direct reclaim of this layer: every thread's cached blocks go back to
    /// the buddy lists (the caller's now, the others' at their next slow
    /// path). Returns the pages returned now.
    func drainForReclaim() -> Int {
        let before = freePagesHot.pointee.load(ordering: .relaxed)
        drainAllLists()
        return Swift.max(0, freePagesHot.pointee.load(ordering: .relaxed) - before)
    }

    func wakeBackgroundReclaim() {
        zone.withLock { $0.counters.lowWatermarkWake += 1 }
        if let hook = lowWatermarkHook.withLock({ $0 }) { hook() }
    }

    // MARK: Free

    /// The page allocator's free slow path: full validation, then the
    /// calling thread's list or the buddy lists.
    @usableFromInline
    func freeSlow(_ pointer: UnsafeMutableRawPointer, order: Int) {
        if let violation = validateFree(pointer, order: order) {
            report(violation)
            return
        }
        profile?.recordFree(pointer)
        let pfn = (UInt(bitPattern: pointer) &- UInt(bitPattern: arena.directMap)) >> UInt(pageShift)
        let groupID = arena.frames[Int(pfn)].group
        if groupID != 0 {
            groups.group(id: groupID)?.uncharge(pageSize << order)
            arena.frames[Int(pfn)].group = 0
        }
        if order < perThreadOrderCount, listLimits[order] > 0,
           freePagesHot.pointee.load(ordering: .relaxed) > watermarks.low {
            let lists = listsForCurrentThread()
            let limit = listLimits[order]
            if lists.count(order).pointee.load(ordering: .relaxed) >= limit {
                drain(lists, keepingFraction: 1)
            }
            let count = lists.count(order)
            let n = count.pointee.load(ordering: .relaxed)
            arena.frames[Int(pfn)].state = PageState.cached.rawValue
            lists.slots(order)[n] = UInt32(pfn)
            count.pointee.store(n + 1, ordering: .relaxed)
            PerThreadPageLists.bump(lists.freedCounter, by: 1 << order)
            return
        }
        let tick = self.tick
        let merged = zone.withLock { state in
            arena.frames[Int(pfn)].state = PageState.tail.rawValue
            let merged = state.buddy.put(Int(pfn), order: order, tick: tick)
            state.counters.pgfree += 1 << order
            publish(state)
            return merged
        }
        waitQueue.notifyFreed()
        maybeRelease(after: merged, now: tick)
    }

    /// The order of the live block that starts at `pointer`; otherwise the
    /// violation is reported (trapping by default) and the answer is nil.
    @usableFromInline
    func liveOrder(of pointer: UnsafeMutableRawPointer, operation: String) -> Int? {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: arena.directMap)
        if offset < UInt(arena.capacity) && offset & UInt(pageSize - 1) == 0 {
            let f = arena.frames[Int(offset >> UInt(pageShift))]
            if f.state == PageState.allocated.rawValue { return Int(f.order) }
        }
        // Validate as an order-0 free to classify the problem, under the caller's name.
        if var violation = validateFree(pointer, order: 0, operation: operation) {
            if violation.kind == .misalignedPointer || violation.kind == .wrongOrder {
                let pfn = Int(offset >> UInt(pageShift))
                if let head = headOfFreeBlock(containing: pfn) {
                    // A pointer into free memory: an object whose slab went back to the page
                    // allocator, freed again (or a pointer that was never allocated).
                    violation = HardeningViolation(
                        kind: .doubleFree, operation: operation, pointer: violation.pointer,
                        detail: "double free (or never allocated): page \(pfn) is free, in the free block at page \(head); the allocation it belonged to (an object of a slab since returned, or pages) was freed already")
                } else {
                    violation = HardeningViolation(kind: .interiorPointer, operation: operation, pointer: violation.pointer,
                                                   detail: "not the start of an allocation: \(violation.detail)")
                }
            }
            report(violation)
        }
        return nil
    }

    /// The head of the free (listed or per-thread cached) block that holds
    /// page `pfn`, or nil when that page is allocated or was never used.
    func headOfFreeBlock(containing pfn: Int) -> Int? {
        let isFree = { (state: UInt8) in state == PageState.free.rawValue || state == PageState.cached.rawValue }
        if isFree(arena.frames[pfn].state) { return pfn }
        guard arena.frames[pfn].state == PageState.tail.rawValue else { return nil }
        for o in 1...maxOrder {
            let head = pfn & ~((1 << o) - 1)
            let h = arena.frames[head]
            guard h.state != PageState.tail.rawValue, Int(h.order) >= o else { continue }
            return isFree(h.state) ? head : nil
        }
        return nil
    }

    /// Checks a `freePages` call against the descriptors; `nil` when valid.
    func validateFree(_ pointer: UnsafeMutableRawPointer, order: Int, operation: String? = nil) -> HardeningViolation? {
        let op = operation ?? "freePages(order: \(order))"
        let address = UInt(bitPattern: pointer)
        let offset = address &- UInt(bitPattern: arena.directMap)
        func violation(_ kind: HardeningViolation.Kind, _ detail: String) -> HardeningViolation {
            HardeningViolation(kind: kind, operation: op, pointer: address, detail: detail)
        }
        guard offset < UInt(arena.capacity) else {
            return violation(.foreignPointer, "not inside the arena (0x\(String(UInt(bitPattern: arena.directMap), radix: 16)) + \(arena.capacity >> 20) MiB)")
        }
        guard order >= 0 && order <= maxOrder else {
            return violation(.wrongOrder, "order \(order) is outside 0...\(maxOrder)")
        }
        let pfn = Int(offset >> UInt(pageShift))
        guard offset & UInt((pageSize << order) - 1) == 0 else {
            return violation(.misalignedPointer, "an order-\(order) block starts on a multiple of \(pageSize << order) bytes; this is page \(pfn) + \(offset & UInt(pageSize - 1)) bytes")
        }
        let f = arena.frames[pfn]
        switch PageState(rawValue: f.state) {
        case .allocated:
            if f.owner != 0 {
                return violation(.wrongAllocator, "page \(pfn) is a slab page of an object cache: free its objects with deallocate(_:)")
            }
            if Int(f.order) != order {
                return violation(.wrongOrder, "page \(pfn) heads an allocated order-\(f.order) block")
            }
            return nil
        case .free, .cached:
            if f.flags & PageFrame.flagEverAllocated != 0 {
                return violation(.doubleFree, "page \(pfn) is already free (order-\(f.order) block\(f.state == PageState.cached.rawValue ? " in a per-thread list" : ""))")
            }
            return violation(.neverAllocated, "page \(pfn) heads a free order-\(f.order) block that was never allocated")
        case .tail, .none:
            // Find the block that contains this page.
            for o in 1...maxOrder {
                let head = pfn & ~((1 << o) - 1)
                let h = arena.frames[head]
                guard h.state != PageState.tail.rawValue, Int(h.order) >= o else { continue }
                if h.state == PageState.allocated.rawValue {
                    return violation(.interiorPointer, "page \(pfn) is inside the allocated order-\(h.order) block at page \(head)")
                }
                return violation(.neverAllocated, "page \(pfn) is inside the free order-\(h.order) block at page \(head)")
            }
            return violation(.neverAllocated, "page \(pfn) is not the start of any block")
        }
    }

    func report(_ violation: HardeningViolation) {
        hardeningViolations.wrappingAdd(1, ordering: .relaxed)
        events.emit(.hardeningViolation(violation))
        if hardeningAction == .trap {
            fatalError("swift-mm: \(violation.description)")
        }
    }

    func reportInvalid(_ request: InvalidRequest) {
        invalidRequests.wrappingAdd(1, ordering: .relaxed)
        events.emit(.invalidRequest(request))
    }
}

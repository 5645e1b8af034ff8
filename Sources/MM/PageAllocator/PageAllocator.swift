// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// Counters of the page allocator (`MemoryStatistics.pageAllocator`).
/// Kernel analogue: the page-allocator lines of `/proc/vmstat`.
public struct PageAllocatorCounters: Sendable, Hashable {
    /// Pages handed out (`pgalloc`), per-thread lists included.
    public var pgalloc = 0
    /// Pages freed (`pgfree`), per-thread lists included.
    public var pgfree = 0
    /// Requests that failed (`pgalloc_fail`).
    public var pgallocFail = 0
    /// Batched refills of a per-thread list from the buddy lists (`pcp_refill`).
    public var pcpRefill = 0
    /// Per-thread lists returned to the buddy lists (`pcp_drain`).
    public var pcpDrain = 0
    /// Times free memory fell below `low` and woke the background reclaimer (`low_watermark_wake`).
    public var lowWatermarkWake = 0
    /// Pages returned to the OS (`pgrelease`).
    public var pgrelease = 0
    /// Release passes (`release_runs`).
    public var releaseRuns = 0
    /// The fewest free pages the system has had (`nr_free_pages_lowest`).
    public var lowestFreePages = 0
    /// Requests that could never succeed (`invalid_request`).
    public var invalidRequests = 0
    /// Frees and queries with bad pointers (`hardening_violation`).
    public var hardeningViolations = 0
}

/// The zone lock's contents: the buddy lists and their counters.
struct ZoneState: Sendable {
    var buddy: BuddyZone
    var counters = PageAllocatorCounters()
    /// Allocation and free counts of per-thread lists that have been detached.
    var foldedAllocated = 0, foldedFreed = 0
}

/// How the allocator responds to a hardening violation.
public enum HardeningAction: Sendable, Hashable {
    /// Report the event, then stop the process with a message naming the
    /// pointer and the problem (the default, like `slab_debug` panics).
    case trap
    /// Report the event and ignore the operation; nothing is freed or lost.
    case report
}

/// What the page allocator tells the boxes above it; `MemorySystem` wires
/// these at init. Each costs nothing while unused: charged blocks and
/// profiled systems never take the fast path.
struct PageAllocatorHooks: Sendable {
    /// Uncharges a freed block from the group with this identifier.
    var uncharge: @Sendable (_ groupID: UInt32, _ bytes: Int) -> Void = { _, _ in }
    /// Sees every freed allocation's address (allocation profiling).
    var recordFree: (@Sendable (UnsafeMutableRawPointer) -> Void)?
}

/// The page allocator: the buddy zone, its watermarks, the threads' page
/// lists, and the validation of every free. It never blocks and never
/// reclaims: a request it cannot serve above the floor it is given returns
/// nil, and the slow path above decides what to do next.
/// Kernel analogue: `mm/page_alloc.c` (`rmqueue`, `__free_pages`, the pcp lists).
@usableFromInline
final class PageAllocator: PerThreadCacheOwner, @unchecked Sendable {  // immutable after init except through Locked/Atomic members
    typealias Kind = PageListsKind

    /// The threads' page lists of every live system.
    static let lists = PerThreadCacheRegistry<PageAllocator>()

    let systemID: UInt64
    let arena: Arena
    /// The watermarks in force (they move with the process limit).
    let watermarkWords: WatermarkWords
    var watermarks: PageWatermarks { watermarkWords.current }
    /// The process limit in pages (R11); the buddy zone withholds the rest of the arena.
    let limitPages: Atomic<Int>
    let zone: Locked<ZoneState>
    /// Free pages in the buddy lists, published for the lock-free watermark check.
    let freePagesHot: UnsafeMutablePointer<Atomic<Int>>
    /// The fewest free pages the buddy lists have held since the system was created.
    let lowestFreePages = Atomic<Int>(.max)
    /// Opens and closes the lock-free fast paths of this system.
    let gate: FastPathGate
    /// Blocked allocations wait here; every free to the buddy lists wakes them.
    let waitQueue = FreeWaitQueue()
    /// Largest per-thread list, in blocks, per order (0: no lists).
    let listLimits: [Int]
    let events: EventHub
    let hardeningAction: HardeningAction
    let hooks: PageAllocatorHooks
    /// Called when free memory falls below `low` (the background reclaimer plugs in here).
    let lowWatermarkHook = Locked<(@Sendable () -> Void)?>(nil)
    let releaseOrder: Int?
    let releaseDelayTicks: UInt32
    let lastReleasePassTick = Atomic<UInt32>(0)
    /// Milliseconds since the system was created, for the age of free blocks.
    let clock = MillisecondClock()
    let invalidRequests = Atomic<Int>(0)
    let hardeningViolations = Atomic<Int>(0)

    init(systemID: UInt64, arena: Arena, watermarks: Watermarks, perThreadLists: Bool, events: EventHub,
         hardeningAction: HardeningAction, releaseOrder: Int?, releaseDelay: Duration, hooks: PageAllocatorHooks) {
        self.systemID = systemID
        self.arena = arena
        self.watermarkWords = WatermarkWords(PageWatermarks(watermarks))
        self.limitPages = Atomic(arena.pageCount)
        self.events = events
        self.hardeningAction = hardeningAction
        self.hooks = hooks
        self.releaseOrder = releaseOrder
        let ms = releaseDelay.components.seconds * 1000 + releaseDelay.components.attoseconds / 1_000_000_000_000_000
        self.releaseDelayTicks = UInt32(clamping: ms)
        // Per-thread lists scale with the arena so that small arenas do not
        // strand a large share of their memory in thread caches.
        let pagesPer = arena.pageCount / 256
        listLimits = (0..<perThreadOrderCount).map { order in
            perThreadLists ? Swift.min(perThreadListLimit(order), Swift.max(2, pagesPer >> order)) : 0
        }
        zone = Locked(ZoneState(buddy: BuddyZone(frames: arena.frames, pageCount: arena.pageCount, tick: 0)))
        freePagesHot = .allocate(capacity: 1)
        freePagesHot.initialize(to: Atomic(arena.pageCount))
        gate = FastPathGate(low: watermarkWords.current.low)
        Self.lists.register(self, systemID: systemID)
    }

    deinit {
        freePagesHot.deinitialize(count: 1)
        freePagesHot.deallocate()
    }

    /// Forgets every thread's cached blocks (the system is being dropped:
    /// they die with the arena).
    func detachAllThreads() {
        Self.lists.remove(systemID: systemID)
    }

    /// Milliseconds since the system was created (wraps after 49 days; only differences are used).
    var tick: UInt32 { clock.now }

    /// Publishes the free pages the watermark checks see: the buddy lists'
    /// free pages less those the process limit withholds.
    @inline(__always)
    func publish(_ state: borrowing ZoneState) {
        let free = state.buddy.availablePages
        freePagesHot.pointee.store(free, ordering: .relaxed)
        // Written only under the zone lock: a plain compare and store is enough.
        if free < lowestFreePages.load(ordering: .relaxed) { lowestFreePages.store(free, ordering: .relaxed) }
    }

    /// Free pages in the buddy lists now, less those the limit withholds (a relaxed read; may be negative).
    var freePages: Int { freePagesHot.pointee.load(ordering: .relaxed) }

    // MARK: Per-thread lists

    /// The calling thread's lists, attached to this system (returning any
    /// blocks they held for another system first), with a pending drain
    /// request served.
    func listsForCurrentThread() -> PageLists {
        let lists = PageLists.currentOrCreate()
        if lists.systemID != systemID { Self.lists.attach(lists, to: systemID) }
        if lists.takeDrainRequest() { drain(lists, keepingFraction: 0) }
        return lists
    }

    /// Always: the page lists' fast path reads the gate's free-page
    /// threshold itself, not the lists' fast-path key.
    var fastPathOpen: Bool { true }

    func takeBack(_ lists: PageLists) {
        zone.withLock { state in
            returnBlocks(of: lists, keepingFraction: 0, into: &state)
            state.foldedAllocated += lists.record.pointee.allocated.load(ordering: .relaxed)
            state.foldedFreed += lists.record.pointee.freed.load(ordering: .relaxed)
            lists.record.pointee.allocated.store(0, ordering: .relaxed)
            lists.record.pointee.freed.store(0, ordering: .relaxed)
            publish(state)
        }
        waitQueue.notifyFreed()
    }

    func forgetContents(_ lists: PageLists) {
        lists.forgetBlocks()
    }

    /// Returns the coldest blocks of every order in `lists` to the zone,
    /// keeping `keepingFraction` (0 or 1/2) of each list. Owner thread only.
    func drain(_ lists: PageLists, keepingFraction: Int) {
        // Waiters are woken only when blocks came back: two threads whose direct
        // reclaim finds nothing must not wake each other into a busy loop.
        guard lists.cachedPages > 0 else { return }
        zone.withLock { state in
            returnBlocks(of: lists, keepingFraction: keepingFraction, into: &state)
            publish(state)
        }
        waitQueue.notifyFreed()
    }

    private func returnBlocks(of lists: PageLists, keepingFraction keepHalf: Int, into state: inout ZoneState) {
        let tick = self.tick
        for order in 0..<perThreadOrderCount {
            let count = lists.count(order)
            guard count > 0 else { continue }
            let keep = keepHalf == 0 ? 0 : count / 2
            let give = count - keep
            for i in 0..<give {  // the bottom of the stack is the coldest
                let pfn = lists.slot(order, i)
                arena.frames[pfn].state = PageState.tail.rawValue
                state.buddy.put(pfn, order: order, tick: tick)
            }
            for i in 0..<keep { lists.setSlot(order, i, lists.slot(order, give + i)) }
            lists.setCount(order, keep)
            state.counters.pcpDrain += 1
        }
    }

    /// Returns every block the calling thread caches for this system.
    func drainCallingThread() {
        if let lists = PageLists.current, lists.systemID == systemID { drain(lists, keepingFraction: 0) }
    }

    /// Asks every thread to return its cached blocks: the calling thread's
    /// lists are drained now, the others' at their next slow path.
    /// Kernel analogue: `drain_all_pages`.
    func drainAllLists() {
        drainCallingThread()
        Self.lists.withAttached(to: systemID) { all in
            for lists in all { lists.requestDrain() }
        }
    }

    /// Direct reclaim of this layer: every thread's cached blocks go back to
    /// the buddy lists (the caller's now, the others' at their next slow
    /// path). Returns the pages returned now.
    func drainForReclaim() -> Int {
        let before = freePages
        drainAllLists()
        return Swift.max(0, freePages - before)
    }

    // MARK: Allocation

    /// A block of `2^order` pages if taking it leaves at least `floor` free
    /// pages, charged to `groupID` (0: none); nil otherwise. Never blocks.
    ///
    /// Above `low` the block comes from the calling thread's list, or from the
    /// buddy lists with a batched refill of that list. Below `low` the
    /// thread's cached blocks go back to the buddy lists first, so that they
    /// merge and count.
    func allocate(order: Int, floor: Int, chargedTo groupID: UInt32 = 0) -> UnsafeMutableRawPointer? {
        let pfn: Int?
        // An exiting thread takes its block from the buddy lists: lists made now would leak.
        if order < perThreadOrderCount && listLimits[order] > 0 && !ThreadSlots.isExiting {
            let lists = listsForCurrentThread()
            if freePages > watermarks.low, let cached = lists.pop(order) {
                pfn = cached
            } else if let taken = takeBlock(order: order, floor: Swift.max(floor, watermarks.low), refill: lists) {
                pfn = taken
            } else if floor < watermarks.low {
                if lists.cachedPages > 0 { drain(lists, keepingFraction: 0) }
                pfn = takeBlock(order: order, floor: floor, refill: nil)
            } else {
                pfn = nil
            }
        } else {
            pfn = takeBlock(order: order, floor: floor, refill: nil)
        }
        guard let pfn else { return nil }
        return markAllocated(pfn, order: order, chargedTo: groupID)
    }

    /// A block of `2^order` pages for a caller that discards its direct-map
    /// memory (vmalloc, whose area has memory of its own): a released block
    /// when there is one — nothing resident to discard, and the warm blocks
    /// stay for the callers that use them — else any block; with `released`
    /// saying which. Same floor and charging as `allocate`, and it never
    /// blocks. It bypasses the per-thread lists, which hold warm blocks.
    func allocateReleased(order: Int, floor: Int, chargedTo groupID: UInt32 = 0)
        -> (pointer: UnsafeMutableRawPointer, released: Bool)? {
        let block = zone.withLock { state -> (pfn: Int, released: Bool)? in
            guard state.buddy.allows(order: order, floor: floor), let block = state.buddy.takeReleased(order: order) else {
                return nil
            }
            state.counters.pgalloc += 1 << order
            publish(state)
            return block
        }
        guard let block else { return nil }
        return (markAllocated(block.pfn, order: order, chargedTo: groupID), block.released)
    }

    private func markAllocated(_ pfn: Int, order: Int, chargedTo groupID: UInt32) -> UnsafeMutableRawPointer {
        let f = arena.frames + pfn
        f.pointee.state = PageState.allocated.rawValue
        f.pointee.order = UInt8(order)
        f.pointee.flags |= PageFrame.flagEverAllocated
        f.pointee.group = groupID
        return arena.address(ofPage: pfn)
    }

    /// Takes one block of `order` if that leaves at least `floor` free pages;
    /// when `lists` is given, also refills that order's list up to half its
    /// limit, without going below `low`. Returns the block's pfn.
    func takeBlock(order: Int, floor: Int, refill lists: PageLists?) -> Int? {
        zone.withLock { state -> Int? in
            guard state.buddy.allows(order: order, floor: floor), let pfn = state.buddy.take(order: order) else {
                return nil
            }
            state.counters.pgalloc += 1 << order
            if let lists {
                let limit = listLimits[order]
                var n = lists.count(order)
                let refillFloor = Swift.max(floor, watermarks.low)
                while n < limit / 2, state.buddy.allows(order: order, floor: refillFloor),
                      let block = state.buddy.take(order: order) {
                    arena.frames[block].state = PageState.cached.rawValue
                    lists.setSlot(order, n, block)
                    n += 1
                }
                lists.setCount(order, n)
                state.counters.pcpRefill += 1
            }
            publish(state)
            return pfn
        }
    }

    func countFailure() {
        zone.withLock { $0.counters.pgallocFail += 1 }
    }

    /// Free memory fell below `low`: wakes the background reclaimer.
    func wakeBackgroundReclaim() {
        zone.withLock { $0.counters.lowWatermarkWake += 1 }
        if let hook = lowWatermarkHook.withLock({ $0 }) { hook() }
    }

    // MARK: Free

    /// The page allocator's free slow path: full validation, then the
    /// calling thread's list or the buddy lists.
    @usableFromInline
    func freeSlow(_ pointer: UnsafeMutableRawPointer, order: Int) {
        guard let pfn = acceptFree(pointer, order: order) else { return }
        if order < perThreadOrderCount, listLimits[order] > 0, freePages > watermarks.low, !ThreadSlots.isExiting {
            let lists = listsForCurrentThread()
            if lists.count(order) >= listLimits[order] { drain(lists, keepingFraction: 1) }
            arena.frames[pfn].state = PageState.cached.rawValue
            _ = lists.push(pfn, order: order, limit: listLimits[order])
            return
        }
        let tick = self.tick
        maybeRelease(after: putBack(pfn, order: order, tick: tick, released: false), now: tick)
    }

    /// Frees a block whose direct-map memory is not resident (a vmalloc
    /// area's frames, discarded when it was mapped): validated and uncharged
    /// as in `freeSlow`, then onto the buddy lists as a released block, so
    /// that it merges as one and is not taken for warm memory.
    func freeReleased(_ pointer: UnsafeMutableRawPointer, order: Int) {
        guard let pfn = acceptFree(pointer, order: order) else { return }
        putBack(pfn, order: order, tick: tick, released: true)
    }

    /// Puts an accepted block onto the buddy lists (merged with its free
    /// buddies) and wakes the waiters for freed memory; the merged block.
    @discardableResult
    private func putBack(_ pfn: Int, order: Int, tick: UInt32, released: Bool) -> (pfn: Int, order: Int) {
        let merged = zone.withLock { state in
            arena.frames[pfn].state = PageState.tail.rawValue
            let merged = state.buddy.put(pfn, order: order, tick: tick, released: released)
            state.counters.pgfree += 1 << order
            publish(state)
            return merged
        }
        waitQueue.notifyFreed()
        return merged
    }

    /// Validates a free (reporting a bad one: nil), tells the profiler and
    /// uncharges the block's group; the block's pfn.
    private func acceptFree(_ pointer: UnsafeMutableRawPointer, order: Int) -> Int? {
        if let violation = validateFree(pointer, order: order) {
            report(violation)
            return nil
        }
        hooks.recordFree?(pointer)
        let pfn = Int((UInt(bitPattern: pointer) &- UInt(bitPattern: arena.directMap)) >> UInt(pageShift))
        let groupID = arena.frames[pfn].group
        if groupID != 0 {
            hooks.uncharge(groupID, pageSize << order)
            arena.frames[pfn].group = 0
        }
        return pfn
    }
}

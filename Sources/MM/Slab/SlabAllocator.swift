// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Synchronization

/// One system's object layer: the kmalloc classes and user caches, the
/// threads' magazines attached to it, and every path that is not a
/// magazine hit. Kernel analogue: `mm/slub.c` and `mm/slab_common.c`.
@usableFromInline
final class SlabAllocator: PerThreadCacheOwner, @unchecked Sendable {  // raw tables written once per index before it is published
    typealias Kind = MagazinesKind

    /// The threads' magazines of every live system.
    static let magazines = PerThreadCacheRegistry<SlabAllocator>()

    let systemID: UInt64
    /// Where slabs come from and go back to.
    let pages: PageAllocator
    /// Layouts by cache index, read by fast paths without locks.
    let layouts: UnsafeMutablePointer<ObjectLayout>
    /// Caches by index (retained), read without locks once published.
    private let table: UnsafeMutablePointer<Unmanaged<SlabCache>?>
    private let nextIndex = Locked<Int>(0)
    /// Accounted twins of programs' caches, by the index of the cache they charge for.
    private let userTwins = Locked<[Int: Int]>([:])
    /// The same, readable without the lock: `twinIndices[index]` is the twin's
    /// index plus one (0: none yet), stored once when the twin is made.
    private let twinIndices: UnsafeMutablePointer<Atomic<Int>>
    /// Sees every freed object's address (allocation profiling), wired by `MemorySystem`.
    let recordFree: (@Sendable (UnsafeMutableRawPointer) -> Void)?
    /// Uncharges a freed accounted object from the group with this identifier.
    let uncharge: @Sendable (_ groupID: UInt32, _ bytes: Int) -> Void
    /// The accounted caches' per-slab group vectors, by slab head page (see
    /// `SlabCache.objectGroups`): one pointer per page of the arena, in a
    /// lazily zeroed mapping of its own, so only the entries of accounted
    /// slabs ever cost memory.
    let objectGroups: UnsafeMutablePointer<UnsafeMutablePointer<UInt32>?>
    private let objectGroupsLength: Int

    init(pages: PageAllocator, kmallocFlags: ObjectCacheFlags = [], recordFree: (@Sendable (UnsafeMutableRawPointer) -> Void)?,
         uncharge: @escaping @Sendable (_ groupID: UInt32, _ bytes: Int) -> Void = { _, _ in }) throws(SystemError) {
        systemID = pages.systemID
        self.pages = pages
        self.recordFree = recordFree
        self.uncharge = uncharge
        let length = (pages.arena.pageCount * MemoryLayout<UnsafeMutablePointer<UInt32>?>.stride + pageSize - 1) & ~(pageSize - 1)
        objectGroups = try pages.arena.syscalls.mapAnonymous(length).get()
            .bindMemory(to: UnsafeMutablePointer<UInt32>?.self, capacity: pages.arena.pageCount)
        objectGroupsLength = length
        precondition(ObjectMagazines.recordOffset + MagazinesKind.recordByteCount <= Int(CMM_EMPTY_OBJECT_CACHES_BYTES),
                     "swift-mm internal: the empty magazine record is smaller than a record")
        layouts = .allocate(capacity: maxObjectCaches)
        twinIndices = .allocate(capacity: maxObjectCaches)
        for i in 0..<maxObjectCaches { (twinIndices + i).initialize(to: Atomic(0)) }
        table = .allocate(capacity: maxObjectCaches)
        table.initialize(repeating: nil, count: maxObjectCaches)
        // The kmalloc classes, then their accounted twins: charged requests take
        // those, one object charged at a time (kernel: the kmalloc-cg-* caches).
        for accounted in [false, true] {
            for size in kmallocSizes {
                let name = (accounted ? "kmalloc-cg-" : "kmalloc-") + (size >= 1024 ? "\(size >> 10)k" : "\(size)")
                // Power-of-two classes are naturally aligned (as kmalloc guarantees); 96 and 192 to 32 and 64.
                let alignment = size & (size - 1) == 0 ? min(size, pageSize) : (size == 96 ? 32 : 64)
                _ = try! makeCache(name: name, size: size, alignment: alignment, flags: kmallocFlags, accounted: accounted)
            }
        }
        Self.magazines.register(self, systemID: systemID)
        pages.gate.setObjectPathObserver { [systemID] in SlabAllocator.magazines.refreshFastPath(systemID: systemID) }
    }

    /// Forgets every thread's cached objects (the system is being dropped).
    func detachAllThreads() {
        Self.magazines.remove(systemID: systemID)
    }

    deinit {
        for i in 0..<cacheCount {
            withCache(i) { cache in
                guard cache.objectGroups != nil else { return }
                cache.central.withLock { s in
                    for pfn in s.slabs { objectGroups[Int(pfn)]?.deallocate() }
                }
            }
        }
        munmap(UnsafeMutableRawPointer(objectGroups), objectGroupsLength)
        for i in 0..<maxObjectCaches { table[i]?.release() }
        table.deallocate()
        layouts.deallocate()
        twinIndices.deinitialize(count: maxObjectCaches)
        twinIndices.deallocate()
    }

    @inline(__always) func cache(_ index: Int) -> SlabCache { table[index]!.takeUnretainedValue() }

    /// `SlabCache.groupEntry` from the layout table alone (no cache
    /// reference to count), for the charged fast paths: the entry of the
    /// object at `address`, on a slab of the accounted cache at `cacheIndex`.
    @inline(__always) func groupEntry(of address: UInt, cacheIndex: Int) -> UnsafeMutablePointer<UInt32> {
        let layout = layouts + cacheIndex
        let offset = address &- UInt(bitPattern: pages.arena.directMap)
        return objectGroups[layout.pointee.slabHeadPage(atOffset: offset)].unsafelyUnwrapped + layout.pointee.slot(atOffset: offset)
    }

    /// Runs `body` with the cache at `index` borrowed (no reference counting:
    /// the table keeps every cache alive for the allocator's lifetime).
    @inline(__always) func withCache<R>(_ index: Int, _ body: (SlabCache) -> R) -> R {
        table[index]!._withUnsafeGuaranteedRef(body)
    }

    var cacheCount: Int { nextIndex.withLock { $0 } }

    var allCaches: [SlabCache] { (0..<cacheCount).map(cache) }

    /// The accounted twin of a cache: for a kmalloc class its `kmalloc-cg-*`
    /// cache; for a program's cache one made at its first charged request,
    /// named `<name>-cg`, with the same geometry and flags. Its objects are
    /// charged one by one and come from the twin's magazines like any other
    /// cache's; the group of each is recorded in its slab's group vector, and
    /// its free takes a charged free path of its own, which uncharges it, so
    /// the uncharged fast path pays nothing for it. nil when the system has no room for
    /// another cache (the error says so). Kernel analogue: the
    /// `kmalloc-cg-*` caches, and the per-memcg copies of a cache that
    /// kernels before 5.9 made.
    func accountedTwin(of index: Int) -> Result<Int, ObjectCacheError> {
        if index < kmallocClassCount { return .success(index + kmallocClassCount) }
        if index < 2 * kmallocClassCount { return .success(index) }
        let original = cache(index)
        return userTwins.withLock { twins -> Result<Int, ObjectCacheError> in
            if let twin = twins[index] { return .success(twin) }
            // A twin charges for itself; a destroyed cache reports its allocations as such.
            if twins.values.contains(index) || original.central.withLock({ $0.destroyed }) { return .success(index) }
            let made = Result { () throws(ObjectCacheError) -> SlabCache in
                try makeCache(name: original.name + "-cg", size: original.layout.size,
                              alignment: original.layout.alignment, flags: original.flags, accounted: true)
            }
            if case .success(let twin) = made {
                twins[index] = twin.index
                twinIndices[index].store(twin.index + 1, ordering: .releasing)
            }
            return made.map(\.index)
        }
    }

    /// The accounted twin already made for the program's cache at `index`, if any.
    /// Without a lock: the free of a charged object and the charged fast path ask it.
    func existingTwin(of index: Int) -> Int? {
        if index < kmallocClassCount { return index + kmallocClassCount }
        let twin = twinIndices[index].load(ordering: .acquiring)
        return twin == 0 ? nil : twin - 1
    }

    /// Creates a cache (`accounted`: its slabs get group vectors, and its
    /// frees take the charged free path, which uncharges). Kernel analogue: `kmem_cache_create`.
    func makeCache(name: String, size: Int, alignment: Int, flags: ObjectCacheFlags,
                   accounted: Bool = false) throws(ObjectCacheError) -> SlabCache {
        guard !name.isEmpty else { throw ObjectCacheError(field: "name", message: "must not be empty") }
        guard size > 0 else { throw ObjectCacheError(field: "size", message: "\(size) must be positive") }
        guard alignment > 0, alignment & (alignment - 1) == 0, alignment <= pageSize else {
            throw ObjectCacheError(field: "alignment", message: "\(alignment) must be a power of two in 1...\(pageSize)")
        }
        var secret: UInt = 0
        while secret == 0 { secret = UInt(truncatingIfNeeded: SeededGenerator.systemSeed()) }
        guard var layout = ObjectLayout(size: size, alignment: max(8, alignment), redZone: flags.contains(.redZone),
                                        secret: secret) else {
            throw ObjectCacheError(field: "size", message: "\(size) bytes does not fit an order-\(costlyOrder) slab (\(pageSize << costlyOrder) bytes); allocate pages or virtual memory instead")
        }
        if !flags.isDisjoint(with: [.redZone, .poison, .zeroOnFree]) { layout.checkedOnly = 1 }
        layout.isAccounted = accounted
        let index = try nextIndex.withLock { (next: inout Int) throws(ObjectCacheError) -> Int in
            guard next < maxObjectCaches else {
                throw ObjectCacheError(field: "name", message: "this system has created \(maxObjectCaches) object caches, its lifetime limit")
            }
            next += 1
            return next - 1
        }
        (layouts + index).initialize(to: layout)
        let cache = SlabCache(name: name, index: index, layout: layout, flags: flags, arena: pages.arena,
                              objectGroups: accounted ? objectGroups : nil)
        table[index] = .passRetained(cache)
        return cache
    }

    // MARK: Magazines

    /// The calling thread's magazines, attached to this system, with a
    /// pending drain request served.
    func magazinesForCurrentThread() -> ObjectMagazines {
        let m = ObjectMagazines.currentOrCreate()
        if m.systemID != systemID { Self.magazines.attach(m, to: systemID) }
        if m.takeDrainRequest() {
            for index in m.usedIndices(below: cacheCount) { drain(m, index: index, keep: 0) }
        }
        return m
    }

    /// Returns all objects of `m` and frees its stacks (thread exit, or the
    /// thread moving to another system).
    /// Whether the object fast path may use the magazines (the system's
    /// fast-path gate is open).
    var fastPathOpen: Bool { pages.gate.isObjectPathOpen }

    func takeBack(_ m: ObjectMagazines) {
        for index in m.usedIndices(below: cacheCount) {
            drain(m, index: index, keep: 0)
            m.freeStack(index)
        }
    }

    /// Frees the stacks of `m` without returning their objects (the system
    /// is being dropped: the objects die with the arena).
    func forgetContents(_ m: ObjectMagazines) {
        for index in m.usedIndices(below: maxObjectCaches) { m.freeStack(index) }
    }

    /// Moves all but the `keep` most recent objects of a magazine to the
    /// cache's depot (owner thread). Kernel analogue: `flush_cpu_sheaves`.
    func drain(_ m: ObjectMagazines, index: Int, keep: Int) {
        let n = m.count(index)
        let give = n - keep
        guard give > 0 else { return }
        let cache = self.cache(index)
        let stack = m.stack(index)
        let empty = cache.central.withLock { s -> [UInt32] in
            UnsafeRawPointer(stack).withMemoryRebound(to: UInt.self, capacity: give) {
                s.depot.append(contentsOf: UnsafeBufferPointer(start: $0, count: give))
            }
            s.counters.drains += 1
            // Past its limit the depot returns its older half at once: one move of the rest, not one per drain.
            if s.destroyed { cache.trimDepot(&s, keep: 0) }
            else if s.depot.count > cache.depotLimit { cache.trimDepot(&s, keep: cache.depotLimit / 2) }
            return cache.detachEmptySlabs(&s, keep: s.destroyed ? 0 : cache.keptEmptySlabs)
        }
        if keep > 0 { stack.update(from: stack + give, count: keep) }
        m.setCount(index, keep)
        freeSlabs(empty, of: cache)
    }

    /// Fills a magazine to half its limit: depot first, then slab free
    /// lists, then a new slab from the page allocator if that leaves `floor`
    /// free pages. No cache lock is held while pages are allocated.
    func refill(_ cache: SlabCache, _ m: ObjectMagazines, floor: Int) -> Bool {
        let index = cache.index
        if !m.hasStack(index) { m.makeStack(index, limit: cache.magazineLimit, layout: cache.layout) }
        let stack = m.stack(index)
        let n = m.count(index)
        let want = max(1, cache.batch - n)
        var corruption: [HardeningViolation] = []
        var got = cache.central.withLock { s -> Int in
            var k = min(want, s.depot.count)
            if k > 0 {
                s.depot.withUnsafeBufferPointer { depot in
                    UnsafeMutableRawPointer(stack + n).withMemoryRebound(to: UInt.self, capacity: k) {
                        $0.update(from: depot.baseAddress! + (depot.count - k), count: k)
                    }
                }
                s.depot.removeLast(k)
            }
            if k < want { k += cache.takeFromSlabs(&s, into: stack + n + k, max: want - k, corruption: &corruption) }
            s.counters.refills += 1
            return k
        }
        for v in corruption { pages.report(v) }
        if got == 0 {
            guard let pfn = newSlab(cache, floor: floor) else { return false }
            got = cache.central.withLock { s in
                cache.add(pfn, &s)
                return cache.takeFromSlabs(&s, into: stack + n, max: want, corruption: &corruption)
            }
        }
        m.setCount(index, n + got)
        return got > 0
    }

    /// Allocates and carves a slab for `cache`, if that leaves `floor` free pages.
    func newSlab(_ cache: SlabCache, floor: Int) -> UInt32? {
        guard let block = pages.allocate(order: cache.layout.slabOrder, floor: floor) else { return nil }
        let pfn = UInt32((UInt(bitPattern: block) - cache.directMap) >> UInt(pageShift))
        cache.carve(pfn)
        return pfn
    }

    /// Frees detached empty slabs to the page allocator.
    func freeSlabs(_ pfns: [UInt32], of cache: SlabCache) {
        for pfn in pfns {
            cache.uncarve(pfn)
            pages.freeSlow(pages.arena.address(ofPage: Int(pfn)), order: cache.layout.slabOrder)
        }
    }

    // MARK: Reclaim

    /// Moves the calling thread's cached objects of this system to the depots.
    func drainCurrentThread() {
        guard let m = ObjectMagazines.current, m.systemID == systemID else { return }
        for index in m.usedIndices(below: cacheCount) { drain(m, index: index, keep: 0) }
    }

    /// Returns the calling thread's cached objects, asks every other thread
    /// to return theirs at its next slow path, empties the depots and frees
    /// every completely free slab. Returns the pages freed.
    /// Kernel analogue: `kmem_cache_shrink` on every cache (SLUB's shrinker path).
    func reclaim() -> Int {
        if let m = ObjectMagazines.current, m.systemID == systemID {
            for index in m.usedIndices(below: cacheCount) { drain(m, index: index, keep: 0) }
        }
        Self.magazines.withAttached(to: systemID) { all in
            for m in all { m.requestDrain() }
        }
        var pages = 0
        for cache in allCaches {
            let empty = cache.central.withLock { s -> [UInt32] in
                cache.trimDepot(&s, keep: 0)
                return cache.detachEmptySlabs(&s, keep: 0)
            }
            freeSlabs(empty, of: cache)
            pages += empty.count << cache.layout.slabOrder
        }
        return pages
    }

    // MARK: Statistics

    /// One `SlabCacheStatistics` per cache, in creation order.
    func statistics() -> [SlabCacheStatistics] {
        let caches = allCaches
        var cached = [Int](repeating: 0, count: caches.count)
        // Only the counts, which are atomics: another thread's stack pointers are its
        // own (it creates a stack on its first refill, while this runs).
        Self.magazines.withAttached(to: systemID) { all in
            for m in all {
                for index in 0..<caches.count { cached[index] += m.count(index) }
            }
        }
        return caches.map { cache in
            let c = cache.counts()
            return SlabCacheStatistics(
                name: cache.name, activeObjects: max(0, c.notFreeInCentral - cached[cache.index]), totalObjects: c.total,
                objectSize: cache.layout.size, objectsPerSlab: cache.layout.objectsPerSlab,
                pagesPerSlab: 1 << cache.layout.slabOrder, slabs: c.slabs, cachedInThreads: cached[cache.index])
        }
    }
}

/// Why an object cache could not be created.
public struct ObjectCacheError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The arguments of `makeObjectCache` that are checked, to match on.
    public enum Field: String, Sendable, Hashable, CaseIterable {
        case name, size, alignment
    }
    /// The offending argument, to match on.
    public var code: Field
    /// The offending argument of `makeObjectCache`, by name (`code.rawValue`).
    public var field: String { code.rawValue }
    /// The rule it breaks, with the value.
    public var message: String

    init(field: String, message: String) {
        guard let code = Field(rawValue: field) else { preconditionFailure("unknown object cache argument \(field)") }
        self.code = code
        self.message = message
    }

    /// A one-line description, as events and reports print it.
    public var description: String { "invalid object cache \(field): \(message)" }
}

/// One line of slabinfo. Kernel analogue: a line of `/proc/slabinfo`.
public struct SlabCacheStatistics: Sendable, Hashable {
    /// The cache's name.
    public var name: String
    /// Objects handed out and not freed.
    public var activeObjects: Int
    /// Objects in all the cache's slabs.
    public var totalObjects: Int
    /// Usable bytes per object.
    public var objectSize: Int
    /// Objects that fit in one slab.
    public var objectsPerSlab: Int
    /// Pages in one slab (`2^order`).
    public var pagesPerSlab: Int
    /// Slabs the cache holds.
    public var slabs: Int
    /// Free objects held in threads' magazines (part of `totalObjects - activeObjects`).
    public var cachedInThreads: Int
}

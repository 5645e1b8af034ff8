// SPDX-License-Identifier: Apache-2.0
import DequeModule
import MM
import Synchronization

/// A lock of a scenario: a `ReclaimCheckedMutex`, so the reclaim-recursion
/// checker sees the scenario's locks like a program's.
final class LabLock: Sendable {
    let name: String
    let mutex: ReclaimCheckedMutex<Int>

    init(name: String, domain: ReclaimDomain?) {
        self.name = name
        mutex = ReclaimCheckedMutex(0, name: name, takenByReclaimIn: domain)
    }
}

/// A cache of a scenario, built the way the library recommends a program
/// build one: its objects come from an `ObjectCache` of its own, made with
/// `.reclaimable` (so slabinfo lists it and meminfo counts it in
/// `SReclaimable`) unless only a kill frees it, and a shrinker frees the
/// oldest objects under pressure (taking `lock` for every scan, as an inode
/// cache takes the journal lock). A killed group drops all its objects at once.
final class LabCache: Shrinker {
    let name: String
    let domain: ReclaimDomain?
    let seeks: Int
    let objectSize: Int
    let lock: LabLock?
    let group: MemoryGroup?
    /// Whether the shrinker may free objects (false: only a kill frees them).
    let reclaimable: Bool
    /// Where the objects come from: the cache's own slab cache (kernel: `kmem_cache_create`).
    let objects: ObjectCache
    /// The cached objects, oldest first.
    private let list = SharedValue<Deque<UInt>>([])
    private let population = Atomic<Int>(0)

    init(spec: Scenario.CacheSpec, mm: MemorySystem, lock: LabLock?, group: MemoryGroup?) throws(ObjectCacheError) {
        name = spec.name
        domain = spec.domain.map(LabScopes.domain)
        seeks = spec.seeks ?? 2
        objectSize = spec.objectSize.bytes
        self.lock = lock
        self.group = group
        self.reclaimable = spec.reclaimable ?? true
        objects = try mm.makeObjectCache(name: spec.name, size: objectSize, flags: reclaimable ? [.reclaimable] : [])
    }

    var count: Int { population.load(ordering: .relaxed) }

    /// A cache charged to a group holds that group's objects only: reclaim for
    /// another group's limit must not touch it (R8), and it is spared while
    /// its group is protected (R10).
    var isGroupAware: Bool { group != nil }

    func countObjects(_ control: ShrinkControl) -> Int {
        guard reclaimable else { return 0 }
        if let group, control.group !== group { return 0 }
        return population.load(ordering: .relaxed)
    }

    func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        guard reclaimable else { return .freed(0) }
        if let group, control.group !== group { return .freed(0) }
        if let lock {
            return .freed(lock.mutex.withLock { _ in evict(control.objectsToScan) })
        }
        return .freed(evict(control.objectsToScan))
    }

    /// Frees up to `n` of the oldest objects.
    func evict(_ n: Int) -> Int {
        let taken = list.withLock { list -> [UInt] in
            let k = min(n, list.count)
            defer { list.removeFirst(k) }
            return Array(list.prefix(k))
        }
        for p in taken { objects.deallocate(UnsafeMutableRawPointer(bitPattern: p)!) }
        population.wrappingSubtract(taken.count, ordering: .relaxed)
        return taken.count
    }

    /// Keeps `pointer`, an object of `objects`, as one more cached object.
    func add(_ pointer: UnsafeMutableRawPointer) {
        list.withLock { $0.append(UInt(bitPattern: pointer)) }
        population.wrappingAdd(1, ordering: .relaxed)
    }

    /// Allocates `count` objects (fallibly, charged to the cache's group) at
    /// the scenario's call site `site`; returns how many it got.
    @discardableResult
    func grow(count: Int, policy: AllocationPolicy = .standard, site: UInt) -> Int {
        var policy = policy
        policy.group = group
        var got = 0
        for _ in 0..<count {
            guard let p = objects.allocate(policy: policy, file: "scenario", line: site) else { break }
            p.storeBytes(of: UInt64(got), as: UInt64.self)
            add(p)
            got += 1
        }
        return got
    }

    /// Frees every other object (oldest first), leaving free memory without
    /// large free blocks; returns how many it freed.
    @discardableResult
    func fragment() -> Int {
        let taken = list.withLock { list -> [UInt] in
            var kept: Deque<UInt> = [], freed: [UInt] = []
            for (i, p) in list.enumerated() { if i % 2 == 0 { freed.append(p) } else { kept.append(p) } }
            list = kept
            return freed
        }
        for p in taken { objects.deallocate(UnsafeMutableRawPointer(bitPattern: p)!) }
        population.wrappingSubtract(taken.count, ordering: .relaxed)
        return taken.count
    }

    /// Frees every object without the lock (the group was killed, or the run is over).
    @discardableResult
    func dropAll() -> Int { evict(Int.max) }
}

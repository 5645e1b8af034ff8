// SPDX-License-Identifier: Apache-2.0

#if DEBUG || MM_INTERNAL_CHECKS

extension SlabAllocator {
    /// The broken invariants of the object layer, in words: the calling
    /// thread's magazines (count within limit, the base equal to its shared
    /// copy, the limit 0 or the cache's, every cached object a slot of its cache carrying the free or
    /// fresh canary), each depot (free canaries) and each cache's slab lists
    /// (free counts agreeing with `freeInSlabs`). Call it only while no
    /// other thread uses the system. Kernel analogue: `validate_slab_cache`.
    func invariantViolations() -> [String] {
        var problems: [String] = []
        let caches = allCaches
        if let m = ObjectMagazines.current, m.systemID == systemID {
            for index in m.usedIndices(below: caches.count) {
                let cache = caches[index]
                let n = m.count(index)
                if n < 0 || n > cache.magazineLimit {
                    problems.append("\(cache.name): magazine count \(n) outside 0...\(cache.magazineLimit)")
                    continue
                }
                let mag = m.magazine(index)
                if mag.pointee.base != mag.pointee.sharedBase.load(ordering: .relaxed) {
                    problems.append("\(cache.name): magazine base and its shared copy differ")
                }
                if m.limit(index) != 0 && m.limit(index) != cache.magazineLimit {
                    problems.append("\(cache.name): magazine limit \(m.limit(index)), not 0 or \(cache.magazineLimit)")
                }
                for k in 0..<n {
                    problems += objectProblems(UInt(bitPattern: m.stack(index)[k]), cache, where: "magazine entry \(k)")
                }
            }
        }
        for cache in caches {
            cache.central.withLock { s in
                for (k, object) in s.depot.enumerated() {
                    problems += objectProblems(object, cache, where: "depot entry \(k)")
                }
                let onLists = s.slabs.reduce(0) { $0 + cache.freeCount($1) }
                if onLists != s.freeInSlabs {
                    problems.append("\(cache.name): slab free lists hold \(onLists) objects, freeInSlabs says \(s.freeInSlabs)")
                }
            }
        }
        return problems
    }

    private func objectProblems(_ object: UInt, _ cache: SlabCache, where place: String) -> [String] {
        let layout = cache.layout
        let pfn = cache.slabHead(of: object)
        guard object >= cache.directMap, cache.isSlot(object, inSlab: pfn),
              pages.arena.frames[Int(pfn)].owner == UInt32(cache.index + 1) else {
            return ["\(cache.name): \(place) 0x\(String(object, radix: 16)) is not a slot of this cache"]
        }
        let word = UnsafeRawPointer(bitPattern: object)!.load(fromByteOffset: layout.canaryOffset, as: UInt.self)
        // The free canary, or the fresh one (never handed out yet).
        return word ^ layout.freeCanary(object) <= 1 ? [] : ["\(cache.name): \(place) 0x\(String(object, radix: 16)) lacks the free canary"]
    }
}
#endif

// SPDX-License-Identifier: Apache-2.0

#if DEBUG || MM_INTERNAL_CHECKS

extension SlabAllocator {
    /// The broken invariants of the object layer, in words: the calling
    /// thread's magazines (count within limit, the base equal to its shared
    /// copy, the limit 0 or the cache's, every cached object a slot of its cache carrying the free or
    /// fresh canary), each depot (free canaries) and each cache's slab lists
    /// (free counts agreeing with `freeInSlabs`); for accounted caches, a
    /// group vector for every slab and no free object still charged. Call it only while no
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
                    let object = UInt(bitPattern: m.stack(index)[k])
                    problems += objectProblems(object, cache, where: "magazine entry \(k)")
                    if cache.objectGroups != nil, objectGroups[Int(cache.slabHead(of: object))]?[cache.slot(of: object)] ?? 0 != 0 {
                        problems.append("\(cache.name): magazine object 0x\(String(object, radix: 16)) is still charged to a group")
                    }
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
                if cache.objectGroups != nil { problems += groupVectorProblems(cache, s) }
            }
        }
        return problems
    }

    /// An accounted cache: every slab has its group vector, and no free
    /// object — in the depot or on a slab's free list — is charged to a group.
    private func groupVectorProblems(_ cache: SlabCache, _ s: SlabCacheState) -> [String] {
        var problems: [String] = []
        for pfn in s.slabs.sorted() {
            guard let vector = objectGroups[Int(pfn)] else {
                problems.append("\(cache.name): the slab at page \(pfn) has no group vector")
                continue
            }
            var cursor = UInt(pages.arena.frames[Int(pfn)].slabFreeList)
            var seen = 0
            while cursor != 0 && seen < cache.layout.objectsPerSlab {
                if vector[cache.slot(of: cursor)] != 0 {
                    problems.append("\(cache.name): free object 0x\(String(cursor, radix: 16)) is still charged to group \(vector[cache.slot(of: cursor)])")
                }
                cursor = cache.layout.decode(UnsafeRawPointer(bitPattern: cursor)!.load(as: UInt.self), at: cursor)
                seen += 1
            }
        }
        for object in s.depot where objectGroups[Int(cache.slabHead(of: object))]?[cache.slot(of: object)] ?? 0 != 0 {
            problems.append("\(cache.name): depot object 0x\(String(object, radix: 16)) is still charged to a group")
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

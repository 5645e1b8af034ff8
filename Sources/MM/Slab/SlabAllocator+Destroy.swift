// SPDX-License-Identifier: Apache-2.0

extension SlabAllocator {
    /// Destroys a cache: takes back the objects in every thread's magazine
    /// (the caller guarantees no thread uses the cache meanwhile), frees every
    /// free slab and reports each object still allocated. Returns the leak count.
    /// Kernel analogue: `kmem_cache_destroy` / `__kmem_cache_shutdown`.
    func destroy(_ cache: SlabCache) -> Int {
        let index = cache.index
        var twinLeaks = 0
        if index >= 2 * kmallocClassCount, let twin = existingTwin(of: index) {
            twinLeaks = destroy(self.cache(twin))
        }
        var stolen: [UInt] = []
        Self.magazines.withAttached(to: systemID) { all in
            for m in all where m.hasStack(index) {
                let stack = m.stack(index)
                for k in 0..<m.count(index) { stolen.append(UInt(bitPattern: stack[k])) }
                m.setCount(index, 0)
                m.closeStack(index)  // later frees take the checked path
            }
        }
        var leaks: [HardeningViolation] = []
        let layout = cache.layout
        let empty = cache.central.withLock { s -> [UInt32] in
            s.destroyed = true
            layouts[index].checkedOnly = 1
            s.depot.append(contentsOf: stolen)
            cache.trimDepot(&s, keep: 0)
            for pfn in s.slabs.sorted() where cache.freeCount(pfn) < layout.objectsPerSlab {
                var free = Set<UInt>()
                var cursor = UInt(pages.arena.frames[Int(pfn)].slabFreeList)
                while cursor != 0 && free.count <= layout.objectsPerSlab {
                    free.insert(cursor)
                    cursor = layout.decode(UnsafeRawPointer(bitPattern: cursor)!.load(as: UInt.self), at: cursor)
                }
                let base = cache.slabBase(pfn)
                for k in 0..<layout.objectsPerSlab {
                    let address = base + UInt(k * layout.stride)
                    guard !free.contains(address) else { continue }
                    leaks.append(HardeningViolation(
                        kind: .leakedObject, operation: "destroy() of \(cache.name)", pointer: address,
                        detail: "object \(k) of the slab at page \(pfn) is still allocated; its slab stays until it is freed"))
                }
            }
            return cache.detachEmptySlabs(&s, keep: 0)
        }
        freeSlabs(empty, of: cache)
        for leak in leaks { pages.events.emit(.hardeningViolation(leak)) }
        return leaks.count + twinLeaks
    }

    /// `ObjectCache.deallocate` of a pointer whose slab is not that cache's:
    /// an object of the cache's accounted twin (a charged object) is freed
    /// and uncharged; anything else is a `hardeningViolation`.
    @usableFromInline
    func deallocateFromOtherSlab(_ pointer: UnsafeMutableRawPointer, expected: Int) {
        let address = UInt(bitPattern: pointer)
        let offset = address &- UInt(bitPattern: pages.arena.directMap)
        let name = cache(expected).name
        let operation = "\(name).deallocate"
        if offset < UInt(pages.arena.capacity) {
            let owner = pages.arena.frames[Int(offset >> UInt(pageShift))].owner
            if owner != 0, let twin = existingTwin(of: expected), Int(owner) - 1 == twin {
                freeSlow(pointer, operation: operation)
                return
            }
            if owner != 0 {
                pages.report(HardeningViolation(kind: .wrongCache, operation: operation, pointer: address,
                                               detail: "the pointer is in a slab of \(cache(Int(owner) - 1).name), not of \(name)"))
                return
            }
            pages.report(HardeningViolation(kind: .wrongCache, operation: operation, pointer: address,
                                           detail: "the pointer is not in any slab (page memory of the arena)"))
            return
        }
        pages.report(HardeningViolation(kind: .foreignPointer, operation: operation, pointer: address,
                                       detail: "not inside the arena"))
    }
}

// SPDX-License-Identifier: Apache-2.0

extension SlabAllocator {
    // MARK: Allocation slow path

    /// An object of the cache at `index` for a request the fast path did
    /// not serve (an empty magazine, a closed fast path, a checked cache):
    /// the magazine, refilled if empty, or one object straight from the
    /// slabs for checked caches. A new slab is taken only if that leaves
    /// `floor` free pages; nil otherwise (the slow path decides what next).
    /// `site` names the call in reports; a non-zero `groupID` (accounted
    /// caches only) is recorded as the object's group, uncharged at its free.
    /// Kernel analogue: `___slab_alloc`.
    func allocate(index: Int, floor: Int, site: CallSite?, chargedTo groupID: UInt32 = 0) -> UnsafeMutableRawPointer? {
        let cache = self.cache(index)
        // The table, not the cache's copy: destroy() sets it. An exiting thread takes the same
        // locked path: it must not make magazines that no destructor would take back.
        if layouts[index].checkedOnly != 0 || ThreadSlots.isExiting {
            return allocateChecked(cache, floor: floor, site: site, chargedTo: groupID)
        }
        let m = magazinesForCurrentThread()
        if m.count(index) == 0 {
            guard refill(cache, m, floor: floor) else { return nil }
        }
        guard let p = m.pop(index) else { return nil }
        (p + cache.layout.canaryOffset).storeBytes(of: 0, as: UInt.self)
        if cache.objectGroups != nil { cache.recordGroup(groupID, of: UInt(bitPattern: p)) }
        return p
    }

    /// Usable bytes of an object of the cache at `index`.
    func objectSize(_ index: Int) -> Int { layouts[index].size }

    /// The locked path of caches with debug flags (and of destroyed ones):
    /// one object straight from the slabs, its poison verified.
    /// Kernel analogue: SLUB's `alloc_debug_processing`.
    private func allocateChecked(_ cache: SlabCache, floor: Int, site: CallSite?, chargedTo groupID: UInt32) -> UnsafeMutableRawPointer? {
        // The lock's closures return what they found instead of writing captured variables:
        // a variable captured by a local function is checked for exclusive access at run time
        // (three swift_beginAccess calls an allocation, about 300 instructions).
        var taken = cache.central.withLock { Self.takeChecked(cache, &$0, chargedTo: groupID) }
        if taken.destroyed {
            pages.reportInvalid(InvalidRequest(operation: "allocate from \(cache.name)", reason: "the cache was destroyed",
                                               site: site))
            return nil
        }
        if taken.object == nil, let pfn = newSlab(cache, floor: floor) {
            for v in taken.corruption { pages.report(v) }
            taken = cache.central.withLock { s in
                cache.add(pfn, &s)
                return Self.takeChecked(cache, &s, chargedTo: groupID)
            }
        }
        for v in taken.corruption { pages.report(v) }
        guard let p = taken.object else { return nil }
        let layout = cache.layout
        if cache.flags.contains(.poison) {
            let start = layout.canaryOffset + 8
            let bytes = UnsafeRawBufferPointer(start: p + start, count: max(0, layout.size - start))
            if let bad = bytes.firstIndex(where: { $0 != ObjectLayout.poisonByte }) {
                pages.report(HardeningViolation(
                    kind: .writeAfterFree, operation: "allocate from \(cache.name)", pointer: UInt(bitPattern: p),
                    detail: "byte \(start + bad) of this free object is 0x\(String(bytes[bad], radix: 16)), not the poison 0x6b: it was written after it was freed"))
            }
        }
        (p + layout.canaryOffset).storeBytes(of: 0, as: UInt.self)
        return p
    }

    /// What `takeChecked` found under the cache's lock (the object is the
    /// calling thread's from then on: it only leaves the lock, not the thread).
    private struct CheckedTake: @unchecked Sendable {
        var object: UnsafeMutableRawPointer?
        var destroyed: Bool
        var corruption: [HardeningViolation]
    }

    /// One object from the slabs of a checked cache, under its lock, recorded
    /// as charged to `groupID` (when not 0); nil object when the slabs are empty.
    private static func takeChecked(_ cache: SlabCache, _ s: inout SlabCacheState, chargedTo groupID: UInt32) -> CheckedTake {
        var result = CheckedTake(object: nil, destroyed: s.destroyed, corruption: [])
        guard !s.destroyed else { return result }
        var object = UnsafeMutableRawPointer(bitPattern: 1)!  // written by takeFromSlabs when it takes one
        guard cache.takeFromSlabs(&s, into: &object, max: 1, corruption: &result.corruption) == 1 else { return result }
        s.counters.checkedAllocations += 1
        if cache.objectGroups != nil { cache.recordGroup(groupID, of: UInt(bitPattern: object)) }
        result.object = object
        return result
    }

    // MARK: Free slow path

    /// The free of a charged object (one of an accounted cache, whose
    /// magazines refuse the free fast path) on that path's terms: its checks
    /// — the fast-path key, the slot start against the cache's own slot
    /// test, the canary — then the uncharge of the group in the slab's group
    /// vector and the push. False, having changed nothing, when anything
    /// needs the full path (which validates, reports and drains).
    /// Kernel analogue: `__memcg_slab_free_hook` before a per-CPU freelist push.
    @inline(__always)
    private func freeChargedObject(_ p: UnsafeMutableRawPointer, offset: UInt, index: Int) -> Bool {
        let layout = layouts + index
        guard layout.pointee.isAccounted, layout.pointee.checkedOnly == 0,
              layout.pointee.canaryOffset == ObjectLayout.fastCanaryOffset else { return false }
        let m = ObjectMagazines.currentOrEmptyForFastPath
        let inSlab = offset & layout.pointee.slabMask
        let canary = layout.pointee.freeCanary(UInt(bitPattern: p))
        let canaryWord = p + ObjectLayout.fastCanaryOffset
        guard m.fastPathKey == systemID,
              ObjectLayout.isSlotStart(inSlab, multiplier: layout.pointee.slotMultiplier, bound: layout.pointee.slotBound),
              (canaryWord.load(as: UInt.self) ^ canary) > 1 else { return false }
        let magazine = m.magazine(index)
        guard magazine.pointee.cursor.load(ordering: .relaxed) < magazine.pointee.end else { return false }  // no room, or no stack yet
        let entry = groupEntry(of: UInt(bitPattern: p), cacheIndex: index)
        let groupID = entry.pointee
        entry.pointee = 0
        if groupID != 0 { uncharge(groupID, layout.pointee.size) }
        canaryWord.storeBytes(of: canary, as: UInt.self)
        _ = m.push(p, onto: magazine)
        return true
    }

    /// Every object free the fast path did not take: full validation, then
    /// the debug checks and the magazine (with a drain) or the slabs.
    /// Kernel analogue: `__slab_free` with `free_debug_processing`.
    @usableFromInline
    func freeSlow(_ p: UnsafeMutableRawPointer, operation: String = "deallocate") {
        let address = UInt(bitPattern: p)
        let offset = address &- UInt(bitPattern: pages.arena.directMap)
        let owner = pages.arena.frames[Int(offset >> UInt(pageShift))].owner
        if freeChargedObject(p, offset: offset, index: Int(owner) - 1) { return }
        let cache = self.cache(Int(owner) - 1)
        if let violation = validate(p, in: cache, operation: operation) {
            pages.report(violation)
            return
        }
        recordFree?(p)
        let layout = cache.layout
        let checked = layouts[cache.index].checkedOnly != 0
        // An exiting thread frees straight to the slab too (see `allocate(index:)`).
        if checked || ThreadSlots.isExiting {
            if cache.flags.contains(.redZone) {
                let zone = UnsafeRawBufferPointer(start: p + layout.size, count: layout.stride - layout.size)
                if let bad = zone.firstIndex(where: { $0 != ObjectLayout.redZoneByte }) {
                    pages.report(HardeningViolation(
                        kind: .redZoneOverwritten, operation: operation, pointer: address,
                        detail: "byte \(layout.size + bad) of this \(layout.size)-byte object of \(cache.name) (its red zone) is 0x\(String(zone[bad], radix: 16)), not 0xbb: something wrote past the end of the object"))
                    (p + layout.size).initializeMemory(as: UInt8.self, repeating: ObjectLayout.redZoneByte,
                                                       count: layout.stride - layout.size)
                }
            }
            if cache.flags.contains(.zeroOnFree) { p.initializeMemory(as: UInt8.self, repeating: 0, count: layout.size) }
            if cache.flags.contains(.poison) {
                p.initializeMemory(as: UInt8.self, repeating: ObjectLayout.poisonByte, count: layout.size)
            }
            (p + layout.canaryOffset).storeBytes(of: layout.freeCanary(address), as: UInt.self)
            // The group is read before the object goes back: another thread may take it at once.
            let groupID = cache.objectGroups != nil ? cache.takeGroup(of: address) : 0
            let empty = cache.central.withLock { s -> [UInt32] in
                cache.returnToSlab(address, &s)
                s.counters.checkedFrees += 1
                return cache.detachEmptySlabs(&s, keep: s.destroyed ? 0 : cache.keptEmptySlabs)
            }
            if groupID != 0 { uncharge(groupID, layout.size) }
            freeSlabs(empty, of: cache)
            return
        }
        let m = magazinesForCurrentThread()
        let index = cache.index
        if !m.hasStack(index) { m.makeStack(index, limit: cache.magazineLimit, layout: cache.layout) }
        if m.count(index) >= m.limit(index) {
            drain(m, index: index, keep: m.limit(index) / 2)
        }
        if cache.objectGroups != nil {
            let groupID = cache.takeGroup(of: address)
            if groupID != 0 { uncharge(groupID, layout.size) }
        }
        (p + layout.canaryOffset).storeBytes(of: layout.freeCanary(address), as: UInt.self)
        _ = m.push(p, index)
    }

    /// Whether freeing `p` (inside a slab of `cache`) is valid; the
    /// violation otherwise. Kernel analogue: `check_object` / `on_freelist`.
    func validate(_ p: UnsafeMutableRawPointer, in cache: SlabCache, operation: String) -> HardeningViolation? {
        let address = UInt(bitPattern: p)
        let layout = cache.layout
        let pfn = cache.slabHead(of: address)
        let base = cache.slabBase(pfn)
        let offset = Int(address - base)
        func violation(_ kind: HardeningViolation.Kind, _ detail: String) -> HardeningViolation {
            HardeningViolation(kind: kind, operation: operation, pointer: address, detail: detail)
        }
        let slot = offset / layout.stride
        // Built only when a violation is reported: interpolation costs more than the checks.
        var where_: String { "\(cache.name) slab at page \(pfn)" }
        if address & 7 != 0 {
            return violation(.misalignedPointer, "objects are aligned to at least 8 bytes; this is \(offset % layout.stride) bytes into slot \(slot) of the \(where_)")
        }
        if slot >= layout.objectsPerSlab {
            return violation(.interiorPointer, "in the unused tail of the \(where_), after its \(layout.objectsPerSlab) objects")
        }
        if offset % layout.stride != 0 {
            return violation(.interiorPointer, "\(offset % layout.stride) bytes into object \(slot) (0x\(String(base + UInt(slot * layout.stride), radix: 16))) of the \(where_)")
        }
        let word = (p + layout.canaryOffset).load(as: UInt.self)
        let canary = layout.freeCanary(address)
        if word == canary {
            return violation(.doubleFree, "object \(slot) of the \(where_) is already free")
        }
        if layout.canaryOffset != 0 && word == canary ^ 1 {
            return violation(.neverAllocated, "object \(slot) of the \(where_) has never been allocated")
        }
        if layout.canaryOffset == 0 {
            // One-word objects hold a link, not a canary, on a slab free list: look there.
            let link = layout.decode(word, at: address)
            if link == 0 || cache.isSlot(link, inSlab: pfn) {
                let onFreeList = cache.central.withLock { _ -> Bool in
                    var cursor = UInt(pages.arena.frames[Int(pfn)].slabFreeList)
                    var steps = 0
                    while cursor != 0 && steps <= layout.objectsPerSlab {
                        if cursor == address { return true }
                        cursor = layout.decode(UnsafeRawPointer(bitPattern: cursor)!.load(as: UInt.self), at: cursor)
                        steps += 1
                    }
                    return false
                }
                if onFreeList {
                    return violation(.doubleFree, "object \(slot) of the \(where_) is on its slab's free list (already freed, or never allocated)")
                }
            }
        }
        return nil
    }
}

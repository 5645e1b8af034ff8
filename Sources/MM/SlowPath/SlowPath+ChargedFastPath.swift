// SPDX-License-Identifier: Apache-2.0

extension SlowPath {
    // A static function of the slab layer's caller's `slab` (a stored constant
    // there): reading it through `router` costs a retain and a release a request.
    /// The charged fast path of an object request with `policy.group`, on
    /// the accounted cache at `index` (a kmalloc class's `kmalloc-cg-*`
    /// twin, or a program cache's `<name>-cg`): a pop from the thread's
    /// magazine of that cache, charged to the group as the charge step
    /// would (R8: `tryCharge` up the hierarchy, nothing above a `max`) when
    /// that needs neither reclaim nor throttling (R9: nothing on the path
    /// above its `high`), and recorded in its slab's group vector for the
    /// free to uncharge. Everything else — an empty magazine, a closed fast
    /// path (charging scope, fault injection, a held checked lock), a
    /// removed group, a group at a `max` or over a `high`, an incoherent
    /// policy — returns nil before anything is charged, and the slow path
    /// serves the request with every rule. No lock; atomics only for the
    /// charge itself. Kernel analogue: `__memcg_slab_post_alloc_hook` after
    /// a per-CPU freelist hit of a `kmalloc-cg-*` cache.
    @inline(__always)
    static func allocateChargedObject(index: Int, policy: AllocationPolicy, slab: SlabAllocator) -> UnsafeMutableRawPointer? {
        guard let group = policy.group, policy.isCoherent, !group.isRemoved else { return nil }
        let m = ObjectMagazines.currentOrEmptyForFastPath
        guard m.fastPathKey == slab.systemID, let p = m.pop(index) else { return nil }
        let size = slab.layouts[index].size
        if group.tryCharge(size) != nil {
            _ = m.push(p, index)  // it came from there: there is room
            return nil
        }
        if group.highestOverage != nil {
            group.uncharge(size)
            _ = m.push(p, index)
            return nil
        }
        slab.groupEntry(of: UInt(bitPattern: p), cacheIndex: index).pointee = group.id
        (p + ObjectLayout.fastCanaryOffset).storeBytes(of: 0, as: UInt.self)
        if policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: size) }
        return p
    }
}

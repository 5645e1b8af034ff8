// SPDX-License-Identifier: Apache-2.0

extension MemorySystem {
    /// Allocates `byteCount` bytes; returns `nil` when the request fails
    /// (reported as `allocationFailure` unless `policy.reportsFailure` is
    /// false or a `.quiet` scope is active) or can never succeed (zero,
    /// negative, larger than the arena, or an incoherent policy: `nil` and
    /// an `invalidRequest` event).
    ///
    /// Up to `kmallocMaxSize` (8 KiB), placements `.contiguous` and
    /// `.automatic` are served from the kmalloc size classes (8 … 8192
    /// bytes; power-of-two classes are naturally aligned, 96 and 192 to 32
    /// and 64 bytes). Larger, `.contiguous` takes buddy pages (up to 4 MiB),
    /// `.virtual` maps pages into one virtually contiguous area of any size
    /// up to the arena's (vmalloc), and `.automatic` tries contiguous pages
    /// without reclaim and falls back to virtual (kvmalloc). `.virtual`
    /// always maps, whatever the size.
    /// Kernel analogue: `kmalloc(size, gfp)`, `vmalloc`, `kvmalloc` by `policy.placement`.
    /// - Parameters:
    ///   - byteCount: bytes wanted, 1 … the capacity.
    ///   - policy: what the request may do when memory is short (default `.standard`).
    ///   - file: the call site's file, for reports (default: the caller's).
    ///   - line: the call site's line, for reports (default: the caller's).
    /// - Returns: the memory (aligned to at least 16 bytes for sizes ≥ 16), or nil.
    @inlinable @inline(__always)
    public func allocate(byteCount: Int, policy: AllocationPolicy = .standard,
                         file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer? {
        if byteCount > 0 && byteCount <= MM.kmallocMaxSize && policy.placement != .virtual,
           let p = objectFastPath.allocate(SizeClass.index(forBytes: byteCount), policy: policy) {
            return p
        }
        // Blocks of up to 32 KiB come from the thread's page lists: for `.contiguous`, and
        // for `.automatic`, whose first step is exactly that (contiguous, above `low`).
        if byteCount > MM.kmallocMaxSize && byteCount <= MM.pageSize << MM.costlyOrder && policy.placement != .virtual,
           let p = pageFastPath.allocate(order: PlacementRouter.order(forBytes: byteCount), policy: policy) {
            return p
        }
        // Charged requests try their fast path first (one call, off the uncharged path).
        if policy.group != nil { return allocateCharged(byteCount: byteCount, policy: policy, file: file, line: line) }
        return slowPath.allocate(byteCount: byteCount, policy: policy, file: file, line: line)
    }

    /// `allocate` of a charged request the inlined fast paths did not serve:
    /// the charged fast path for kmalloc sizes, else the slow path.
    @usableFromInline @inline(never)
    func allocateCharged(byteCount: Int, policy: AllocationPolicy, file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        if byteCount > 0 && byteCount <= MM.kmallocMaxSize && policy.placement != .virtual,
           let p = allocateChargedObject(byteCount: byteCount, policy: policy) {
            return p
        }
        return slowPath.allocate(byteCount: byteCount, policy: policy, file: file, line: line)
    }

    /// Allocates `byteCount` bytes and never returns nil: it reclaims and
    /// waits as long as it takes (`.retryForever`, the default), or
    /// additionally invokes the OOM handler and uses the `.high` reserve
    /// (`.useReserves`, the kernel's `__GFP_NOFAIL`). It blocks even inside
    /// a `.nonBlocking` scope (R2, reported once per call site as a
    /// `scopeConflict`). Sizes up to 8 KiB come from the kmalloc classes, up
    /// to 32 KiB (`costlyOrder`) from pages, larger ones are kvmalloc'd.
    ///
    /// A request that can never be met — zero or negative size, larger than
    /// the arena — traps at once with a message naming the call site.
    /// - Parameters:
    ///   - byteCount: bytes wanted, 1 … the capacity.
    ///   - guarantee: `.retryForever` (default) or `.useReserves`.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    /// - Returns: the memory; never nil.
    @inlinable
    public func allocateGuaranteed(byteCount: Int, _ guarantee: Guarantee = .retryForever,
                                   file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer {
        if byteCount > 0 && byteCount <= MM.kmallocMaxSize,
           let p = objectFastPath.allocate(SizeClass.index(forBytes: byteCount), policy: .standard) {
            return p
        }
        if byteCount > MM.kmallocMaxSize && byteCount <= MM.pageSize << MM.costlyOrder,
           let p = pageFastPath.allocate(order: PlacementRouter.order(forBytes: byteCount), policy: .standard) {
            return p
        }
        return slowPath.allocateGuaranteed(byteCount: byteCount, guarantee: guarantee, file: file, line: line)
    }

    /// The charged fast path for a kmalloc-sized request (see
    /// `SlowPath.allocateChargedObject(index:policy:slab:)`): its class's accounted twin.
    @inline(__always)
    func allocateChargedObject(byteCount: Int, policy: AllocationPolicy) -> UnsafeMutableRawPointer? {
        SlowPath.allocateChargedObject(index: SizeClass.index(forBytes: byteCount) + kmallocClassCount, policy: policy, slab: slab)
    }

    /// Frees memory from any `allocate` form, `allocatePages` or an
    /// `ObjectCache`; the size comes from the metadata. A pointer that is not
    /// the start of a live allocation is a `hardeningViolation` (trap by
    /// default) naming the problem: foreign, misaligned, interior, double
    /// free, never allocated. Kernel analogue: `kfree` / `kvfree`.
    /// - Parameter pointer: a pointer returned by this system's `allocate`, `allocateGuaranteed`, `reallocate`, `allocatePages` or an `ObjectCache`.
    @inlinable @inline(__always)
    public func deallocate(_ pointer: UnsafeMutableRawPointer) {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: objectFastPath.directMap)
        if offset < objectFastPath.capacityBytes {
            let owner = objectFastPath.owner(atOffset: offset)
            if owner != 0 {
                if !objectFastPath.free(pointer, offset: offset, owner: owner) { slab.freeSlow(pointer) }
                return
            }
            if let order = pageFastPath.orderOfBlock(at: pointer) {
                if !pageFastPath.free(pointer, order: order) { pageFastPath.allocator.freeSlow(pointer, order: order) }
                return
            }
        }
        deallocateSlow(pointer)
    }

    /// `deallocate` of a pointer that is neither an object nor an allocated
    /// block of the direct map: a vmalloc area, or a bad pointer (reported).
    @usableFromInline
    func deallocateSlow(_ pointer: UnsafeMutableRawPointer) {
        if virtual.contains(pointer) {
            virtual.free(pointer)
        } else {
            _ = pages.liveOrder(of: pointer, operation: "deallocate")
        }
    }

    /// The bytes usable at `pointer` (at least what was asked for): the
    /// object size of its cache, the size of its page block, or the pages of
    /// its vmalloc area. A pointer that is not the start of a live
    /// allocation is a `hardeningViolation`, and the answer is 0.
    /// Kernel analogue: `ksize`.
    /// - Parameter pointer: the start of a live allocation of this system.
    /// - Returns: the bytes usable at `pointer` (its size class, block or area), or 0.
    public func usableSize(of pointer: UnsafeRawPointer) -> Int {
        let p = UnsafeMutableRawPointer(mutating: pointer)
        if virtual.contains(pointer) {
            if let size = virtual.usableSize(pointer) { return size }
            pages.report(HardeningViolation(kind: .neverAllocated, operation: "usableSize(of:)",
                                           pointer: UInt(bitPattern: pointer), detail: "vmalloc region: no live area starts here"))
            return 0
        }
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: objectFastPath.directMap)
        if offset < objectFastPath.capacityBytes {
            let owner = objectFastPath.owner(atOffset: offset)
            if owner != 0 {
                if let size = objectFastPath.usableSize(p, offset: offset, owner: owner) { return size }
                // Borrowed, not retained: realloc asks this on every call, from every thread.
                let violation = slab.withCache(Int(owner) - 1) { slab.validate(p, in: $0, operation: "usableSize(of:)") }
                if let violation {
                    pages.report(violation)
                    return 0
                }
                return slab.layouts[Int(owner) - 1].size
            }
        }
        if let order = pages.liveOrder(of: p, operation: "usableSize(of:)") {
            return MM.pageSize << order
        }
        return 0
    }

    /// Resizes an allocation with the kernel's `krealloc` semantics: a nil
    /// `pointer` allocates; a size that still fits the current object, block
    /// or area returns `pointer` unchanged (in place); otherwise new memory
    /// is allocated with `policy`, the old contents copied and the old
    /// allocation freed. On failure the answer is nil and `pointer` stays
    /// valid and untouched. A size of zero or less is an `invalidRequest`
    /// (nil, nothing freed). Kernel analogue: `krealloc` / `kvrealloc`.
    /// - Parameters:
    ///   - pointer: a live allocation of this system, or nil (then it allocates).
    ///   - byteCount: the new size.
    ///   - policy: for a new allocation when the old one cannot grow in place.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    /// - Returns: the (possibly moved) allocation, or nil — the old one then stays valid and untouched.
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int, policy: AllocationPolicy = .standard,
                           file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer? {
        guard let pointer else { return allocate(byteCount: byteCount, policy: policy, file: file, line: line) }
        guard byteCount > 0 else {
            pages.reportInvalid(InvalidRequest(operation: "reallocate(byteCount: \(byteCount))",
                                              reason: "the size must be positive; free with deallocate(_:)",
                                              site: CallSite(file, line)))
            return nil
        }
        let old = usableSize(of: pointer)
        guard old > 0 else { return nil }  // reported by usableSize
        if byteCount <= old { return pointer }
        guard let new = allocate(byteCount: byteCount, policy: policy, file: file, line: line) else { return nil }
        new.copyMemory(from: pointer, byteCount: old)
        deallocate(pointer)
        return new
    }

    /// Creates a cache of `size`-byte objects aligned to `alignment`.
    /// - Throws: `ObjectCacheError` for an empty name, a size that is not
    ///   positive or does not fit a 32 KiB slab, an alignment that is not a
    ///   power of two up to 4096, or a system that made 1024 caches already.
    /// Kernel analogue: `kmem_cache_create(name, size, align, flags, ctor: NULL)`.
    /// - Parameters:
    ///   - name: the cache's name in slabinfo and reports.
    ///   - size: bytes per object.
    ///   - alignment: a power of two up to the page size (default 8).
    ///   - flags: `.reclaimable`, `.redZone`, `.poison`, `.zeroOnFree`.
    /// - Returns: the cache.
    /// - Throws: `ObjectCacheError` naming the field that is wrong.
    public func makeObjectCache(name: String, size: Int, alignment: Int = 8,
                                flags: ObjectCache.Flags = []) throws(ObjectCacheError) -> ObjectCache {
        ObjectCache(cache: try slab.makeCache(name: name, size: size, alignment: alignment, flags: flags),
                    slab: slab, objects: objectFastPath, slowPath: slowPath)
    }

    /// Makes the `n`th fallible allocation of this system, counted from the
    /// next one on the calling thread, fail (n = 0 disarms). Guaranteed
    /// requests are not counted. Kernel analogue: `/proc/<pid>/fail-nth`.
    /// - Parameter n: the allocation of this thread that fails, counting from 1 (0 disarms).
    public func failNthAllocation(_ n: Int) {
        faults.failNth(max(0, n))
    }
}

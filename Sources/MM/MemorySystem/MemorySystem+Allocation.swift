// SPDX-License-Identifier: Apache-2.0

extension MemorySystem {
    /// Allocates `byteCount` bytes; returns `nil` when the request fails
    /// (reported as `allocationFailure` unless `policy.reportsFailure` is
    /// false or a `.quiet` scope is active) or can never succeed (zero,
    /// negative, larger than the arena, or an incoherent policy: `nil` and
    /// an `invalidRequest` event).
    ///
    /// Placement `.contiguous` (the default) serves up to 4 MiB from buddy
    /// pages; `.virtual` maps pages into one virtually contiguous area of any
    /// size up to the arena's (vmalloc); `.automatic` tries contiguous pages
    /// without reclaim and falls back to virtual (kvmalloc). The memory is
    /// aligned to at least 4 KiB today (requests are served from pages until
    /// the slab layer lands).
    /// Kernel analogue: `kmalloc(size, gfp)`, `vmalloc`, `kvmalloc` by `policy.placement`.
    @inlinable
    public func allocate(byteCount: Int, policy: AllocationPolicy = .standard,
                         file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer? {
        if byteCount > 0 && (byteCount <= pageSize || (byteCount <= maxContiguousBytes && policy.placement == .contiguous)) {
            return pages.allocate(order: ByteRouting.order(forBytes: byteCount), policy: policy, byteCount: byteCount,
                                  guarantee: nil, file: file, line: line)
        }
        return pages.slow.allocateBytesSlow(byteCount: byteCount, policy: policy, file: file, line: line)
    }

    /// Allocates `byteCount` bytes and never returns nil: it reclaims and
    /// waits as long as it takes (`.retryForever`, the default), or
    /// additionally invokes the OOM handler and uses the `.high` reserve
    /// (`.useReserves`, the kernel's `__GFP_NOFAIL`). It blocks even inside
    /// a `.nonBlocking` scope (R2, reported once per call site as a
    /// `scopeConflict`).
    ///
    /// A request that can never be met — zero or negative size, larger than
    /// the arena — traps at once with a message naming the call site.
    @inlinable
    public func allocateGuaranteed(byteCount: Int, _ guarantee: Guarantee = .retryForever,
                                   file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer {
        if byteCount > 0 && byteCount <= pageSize << costlyOrder,
           let p = pages.allocate(order: ByteRouting.order(forBytes: byteCount), policy: .standard,
                                  byteCount: byteCount, guarantee: guarantee, file: file, line: line) {
            return p
        }
        return pages.slow.allocateGuaranteed(byteCount: byteCount, guarantee: guarantee, file: file, line: line)
    }

    /// Frees memory from any `allocate` form or `allocatePages`; the size
    /// comes from the page metadata. A pointer that is not the start of a
    /// live allocation is a `hardeningViolation` (trap by default).
    /// Kernel analogue: `kfree` / `kvfree`.
    @inlinable
    public func deallocate(_ pointer: UnsafeMutableRawPointer) {
        pages.deallocate(pointer)
    }

    /// The bytes usable at `pointer` (at least what was asked for).
    /// A pointer that is not the start of a live allocation is a
    /// `hardeningViolation`, and the answer is 0. Kernel analogue: `ksize`.
    public func usableSize(of pointer: UnsafeRawPointer) -> Int {
        if pages.slow.virtual.contains(pointer) {
            if let size = pages.slow.virtual.usableSize(pointer) { return size }
            core.report(HardeningViolation(kind: .neverAllocated, operation: "usableSize(of:)",
                                           pointer: UInt(bitPattern: pointer), detail: "vmalloc region: no live area starts here"))
            return 0
        }
        if let order = core.liveOrder(of: UnsafeMutableRawPointer(mutating: pointer), operation: "usableSize(of:)") {
            return pageSize << order
        }
        return 0
    }

    /// Makes the `n`th fallible allocation of this system, counted from the
    /// next one on the calling thread, fail (n = 0 disarms). Guaranteed
    /// requests are not counted. Kernel analogue: `/proc/<pid>/fail-nth`.
    public func failNthAllocation(_ n: Int) {
        pages.slow.failNth(max(0, n))
    }
}

// SPDX-License-Identifier: Apache-2.0

extension SlowPath {
    /// The kvmalloc placement above `kmallocMaxSize` (smaller requests never
    /// get here: the object layer serves them): first contiguous pages
    /// *without* reclaim, reserves or failure reports, then virtual with the
    /// caller's full policy and guarantee.
    /// Kernel analogue: `kvmalloc_node` with `kmalloc_gfp_adjust`.
    func allocateAutomatic(byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?,
                           file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        let order = ByteRouting.order(forBytes: byteCount)
        if byteCount <= maxContiguousBytes, let p = pages.allocate(order: order, policy: policy.opportunistic,
                                                                    byteCount: byteCount, injectable: false, file: file, line: line) {
            return p
        }
        return allocateVirtual(byteCount: byteCount, policy: policy, guarantee: guarantee, file: file, line: line)
    }

    /// vmalloc: pages taken highest order first (opportunistically), then
    /// order 0 with the caller's policy, mapped into one area.
    func allocateVirtual(byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?,
                         file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        let site = CallSite(file, line)
        let total = (byteCount + pageSize - 1) >> pageShift
        var blocks: [(pfn: Int, order: Int)] = []
        // The area is fresh anonymous memory, zero already: the frames need no zeroing.
        var policy = policy
        policy.zeroed = false
        var quietPolicy = policy
        quietPolicy.reportsFailure = false
        func pfn(_ p: UnsafeMutableRawPointer) -> Int {
            Int((UInt(bitPattern: p) - UInt(bitPattern: core.arena.directMap)) >> UInt(pageShift))
        }
        func giveBack() {
            for b in blocks { pages.free(core.arena.address(ofPage: b.pfn), order: b.order) }
            blocks.removeAll()
        }
        var remaining = total
        while remaining > 0 {
            var got: (pfn: Int, order: Int)?
            var order = min(maxOrder, Int.bitWidth - 1 - remaining.leadingZeroBitCount)
            while order >= 1 && got == nil {
                if let p = pages.allocate(order: order, policy: policy.opportunistic, profiled: false, injectable: false, file: file, line: line) {
                    got = (pfn(p), order)
                }
                order -= 1
            }
            if got == nil {
                let p = guarantee != nil
                    ? pages.allocate(order: 0, policy: .standard, guarantee: guarantee, profiled: false, injectable: false, file: file, line: line)
                    : pages.allocate(order: 0, policy: quietPolicy, profiled: false, injectable: false, file: file, line: line)
                guard let p else {
                    giveBack()
                    virtual.countFailure()
                    return failVirtual(byteCount, policy, site, reason: "could not gather \(total) pages (\(total - remaining) gathered)")
                }
                got = (pfn(p), 0)
            }
            blocks.append(got!)
            remaining -= 1 << got!.order
        }
        while true {
            switch virtual.map(blocks: blocks, requested: byteCount, site: site) {
            case .success(let address):
                let p = UnsafeMutableRawPointer(bitPattern: address)
                if let p, let profile = core.profile {
                    profile.recordAllocation(p, bytes: total << pageShift, site: site)
                }
                return p
            case .failure(let failure):
                guard guarantee != nil else {
                    giveBack()
                    virtual.countFailure()
                    return failVirtual(byteCount, policy, site, reason: failure.reason)
                }
                // A guaranteed request waits for mappings to be released.
                let generation = core.waitQueue.generation
                core.waitQueue.wait(since: generation, timeout: .milliseconds(10))
            }
        }
    }

    private func failVirtual(_ byteCount: Int, _ policy: AllocationPolicy, _ site: CallSite,
                             reason: String) -> UnsafeMutableRawPointer? {
        let scope = AllocationScope.current
        let context = AllocationContext.resolve(request: "\(byteCount) bytes (virtual)", policy: policy, guarantee: nil,
                                                scope: scope, site: site)
        return fail(context, reason: reason)
    }

    /// `deallocate` of a pointer outside the direct map: a vmalloc area, or a
    /// bad pointer (reported).
    @usableFromInline
    func deallocateOutsideDirectMap(_ pointer: UnsafeMutableRawPointer) {
        guard virtual.contains(pointer) else {
            _ = core.liveOrder(of: pointer, operation: "deallocate")
            return
        }
        switch virtual.unmap(pointer) {
        case .success(let blocks):
            core.profile?.recordFree(pointer)
            for b in blocks { pages.free(core.arena.address(ofPage: b.pfn), order: b.order) }
        case .failure(let kind):
            core.report(HardeningViolation(kind: kind, operation: "deallocate", pointer: UInt(bitPattern: pointer),
                                           detail: "vmalloc region: \(kind == .interiorPointer ? "inside a live area, not at its start" : kind == .doubleFree ? "the area was already freed" : "no area starts here")"))
        }
    }
}

extension AllocationPolicy {
    /// The cheap first attempt of kvmalloc and of vmalloc's large blocks:
    /// never blocks or reclaims, no reserves, no failure report; same group
    /// and zeroing.
    var opportunistic: AllocationPolicy {
        AllocationPolicy(blocking: false, persistence: .standard, reserve: .none, zeroed: zeroed,
                         reportsFailure: false, placement: .contiguous, group: group)
    }
}

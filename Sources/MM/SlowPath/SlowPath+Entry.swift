// SPDX-License-Identifier: Apache-2.0

/// Largest physically contiguous block: one order-10 block.
@usableFromInline let maxContiguousBytes = pageSize << maxOrder

/// Byte requests → where their memory comes from. The one place that
/// decides it, so the slab and virtual allocators plug in here.
@usableFromInline
enum ByteRouting {
    /// The buddy order that holds `byteCount` bytes (1...maxContiguousBytes).
    @inlinable @inline(__always)
    static func order(forBytes byteCount: Int) -> Int {
        let pages = (byteCount &+ pageSize &- 1) &>> pageShift
        return pages <= 1 ? 0 : Int.bitWidth &- (pages &- 1).leadingZeroBitCount
    }
}

extension SlowPath {
    /// Slow path of a page or small byte request, with validation.
    @usableFromInline
    func allocatePagesSlow(order: Int, policy: AllocationPolicy, byteCount: Int, guarantee: Guarantee?,
                           profiled: Bool = true, injectable: Bool = true,
                           file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        let site = CallSite(file, line)
        guard order >= 0 && order <= maxOrder else {
            core.reportInvalid(InvalidRequest(operation: "allocatePages(order: \(order))",
                                              reason: "order must be in 0...\(maxOrder)", site: site))
            return nil
        }
        if guarantee == nil {
            do { try policy.validate() } catch {
                core.reportInvalid(InvalidRequest(operation: "allocate with policy \(policy)", reason: error.description, site: site))
                return nil
            }
        }
        let request = RequestDescription.pages(bytes: byteCount, order: order)
        let p = allocate(order: order, byteCount: byteCount > 0 ? byteCount : pageSize << order, policy: policy,
                         guarantee: guarantee, site: site, request: request, injectable: injectable)
        if profiled, let p, let profile = core.profile { profile.recordAllocation(p, bytes: pageSize << order, site: site) }
        return p
    }

    /// Slow path of a byte request the fast path did not route: virtual and
    /// automatic placements, and sizes that are zero, negative, larger than
    /// a contiguous block or than the arena.
    @usableFromInline
    func allocateBytesSlow(byteCount: Int, policy: AllocationPolicy, file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        if let reason = impossibility(byteCount: byteCount, placement: policy.placement) {
            core.reportInvalid(InvalidRequest(operation: "allocate(byteCount: \(byteCount))", reason: reason,
                                              site: CallSite(file, line)))
            return nil
        }
        do { try policy.validate() } catch {
            core.reportInvalid(InvalidRequest(operation: "allocate with policy \(policy)", reason: error.description,
                                              site: CallSite(file, line)))
            return nil
        }
        switch policy.placement {
        case .contiguous:
            return allocatePagesSlow(order: ByteRouting.order(forBytes: byteCount), policy: policy, byteCount: byteCount,
                                     guarantee: nil, file: file, line: line)
        case .virtual, .automatic:
            // One request for fault injection, however many steps serve it.
            let request = RequestDescription.pages(bytes: byteCount, order: min(maxOrder, ByteRouting.order(forBytes: byteCount)))
            guard case .proceed = admit(byteCount: byteCount, policy: policy, guarantee: nil, site: CallSite(file, line),
                                        request: request) else { return nil }
            return policy.placement == .virtual
                ? allocateVirtual(byteCount: byteCount, policy: policy, guarantee: nil, file: file, line: line)
                : allocateAutomatic(byteCount: byteCount, policy: policy, guarantee: nil, file: file, line: line)
        }
    }

    /// Why a byte request can never be met, or nil.
    func impossibility(byteCount: Int, placement: Placement) -> String? {
        if byteCount == 0 { return "a zero-byte allocation has no meaning (the kernel's ZERO_SIZE_PTR faults on use)" }
        if byteCount < 0 { return "the size is negative" }
        if byteCount > core.arena.capacity {
            return "\(byteCount) bytes is more than the whole arena (\(core.arena.capacity) bytes)"
        }
        if byteCount > maxContiguousBytes && placement == .contiguous {
            return "contiguous memory comes in blocks of at most \(maxContiguousBytes) bytes (order \(maxOrder)); use placement .virtual or .automatic"
        }
        return nil
    }

    /// A guaranteed request: never returns nil; an impossible one traps at
    /// once with the call site, instead of looping for ever.
    @usableFromInline
    func allocateGuaranteed(byteCount: Int, guarantee: Guarantee, file: StaticString, line: UInt) -> UnsafeMutableRawPointer {
        if let reason = impossibility(byteCount: byteCount, placement: .automatic) {
            let message = "swift-mm: allocateGuaranteed(byteCount: \(byteCount), .\(guarantee)) at \(CallSite(file, line)) can never be met: \(reason)"
            core.reportInvalid(InvalidRequest(operation: "allocateGuaranteed(byteCount: \(byteCount))", reason: reason,
                                              site: CallSite(file, line)))
            preconditionFailure(message, file: file, line: line)
        }
        // Guaranteed page blocks stop at costlyOrder; larger requests are kvmalloc'd.
        let p = byteCount <= pageSize << costlyOrder
            ? allocatePagesSlow(order: ByteRouting.order(forBytes: byteCount), policy: .standard, byteCount: byteCount,
                                guarantee: guarantee, file: file, line: line)
            : allocateAutomatic(byteCount: byteCount, policy: .standard, guarantee: guarantee, file: file, line: line)
        guard let p else {
            preconditionFailure("swift-mm: a guaranteed allocation returned nil (\(byteCount) bytes at \(CallSite(file, line)))")
        }
        return p
    }
}

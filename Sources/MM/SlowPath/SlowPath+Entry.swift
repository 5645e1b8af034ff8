// SPDX-License-Identifier: Apache-2.0
import CMMShims

extension SlowPath {
    /// What `admit` decided.
    enum Admission {
        /// Go on with this resolved context.
        case proceed(AllocationContext)
        /// The request failed already (invalid policy, removed group,
        /// injected fault), and was reported.
        case failed
    }

    /// What every request does before step 1, whatever serves it: validate
    /// the policy (fallible requests), resolve the context (R1–R7), report a
    /// scope conflict, check held reclaim-checked locks, and fault injection
    /// (`cache` names the object cache for its filter).
    func admit(byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?, site: CallSite?,
               request: RequestDescription, cache: String? = nil, scope knownScope: AllocationScope? = nil) -> Admission {
        if guarantee == nil {
            do { try policy.validate() } catch {
                pages.reportInvalid(InvalidRequest(operation: "allocate with policy \(policy)", reason: error.description, site: site))
                return .failed
            }
        }
        let scope = knownScope ?? AllocationScope.current  // read once per request: it costs a TaskLocal lookup
        let group = policy.group ?? scope.charging
        var context = AllocationContext.resolve(
            request, policy: policy, guarantee: guarantee, scope: scope, site: site,
            isOOMVictim: group?.isOOMVictim ?? false)
        if let group, group.isRemoved {
            pages.reportInvalid(InvalidRequest(operation: "allocate charged to group \(group.name)",
                                               reason: "the group was removed and cannot be charged", site: site))
            // A guaranteed request has no nil to return: it is served uncharged.
            guard context.guarantee != nil else { return .failed }
            context.group = nil
        }
        if let conflict = context.conflict { reportConflict(context, conflict) }
        if cmm_thread_slots_get().pointee.heldCheckedLocks > 0 {
            ReclaimRecursionChecker.shared.checkAllocation(context, events: pages.events)
        }
        if context.guarantee == nil && observers.injectFailure(byteCount, site, cache) {
            counters.withLock { $0.faultsInjected += 1 }
            _ = fail(context, reason: "failure injected (fault injection)")
            return .failed
        }
        return .proceed(context)
    }

    /// Whether admission could change nothing about a request with `policy`
    /// that succeeds above `low`: an uncharged, coherent policy, the gate
    /// open (no fault injection, profiling or charging scope anywhere), and
    /// this thread holding no reclaim-checked lock and in no thread-only
    /// charging scope. Then the resolved context is the policy's own, and no
    /// scope can alter a success at step 1, so step 1 can be tried before
    /// the context is built (`attemptBeforeAdmission`).
    @inline(__always)
    private func admissionIsMoot(_ policy: AllocationPolicy) -> Bool {
        let slots: UnsafeMutablePointer<cmm_thread_slots> = cmm_thread_slots_get()
        return policy.group == nil && policy.isCoherent
            && slots.pointee.heldCheckedLocks | slots.pointee.threadChargingScopes == 0
            && pages.freePagesHot.pointee.load(ordering: .relaxed) > pages.gate.pageThreshold.pointee.load(ordering: .relaxed)
    }

    /// Step 1 — the attempt above `low` that `serve` makes first — for a
    /// request the inlined fast paths did not serve (an empty magazine, an
    /// empty page list, a block above the lists), made before admission when
    /// `admissionIsMoot`: the same attempt, without building a context.
    /// Nil sends the request through admission and the whole slow path,
    /// which makes the same attempt again. An `.automatic` route makes its
    /// first step, a contiguous block; a `.virtual` one is left to `serve`.
    /// Kernel analogue: `__alloc_pages` calling `get_page_from_freelist` at
    /// the low watermark before `__alloc_pages_slowpath`.
    @inline(__always)
    private func attemptBeforeAdmission(_ route: Route, policy: AllocationPolicy, site: @autoclosure () -> CallSite)
        -> UnsafeMutableRawPointer? {
        guard admissionIsMoot(policy) else { return nil }
        let p: UnsafeMutableRawPointer?, bytes: Int
        switch route {
        case .object(let index):
            p = router.slab.allocate(index: index, floor: pages.watermarks.low, site: site())
            bytes = router.slab.objectSize(index)
        case .pages(let order):
            p = pages.allocate(order: order, floor: pages.watermarks.low)
            bytes = pageSize << order
        case .automatic(let order, let byteCount) where byteCount <= maxContiguousBytes:  // its contiguous step
            p = pages.allocate(order: order, floor: pages.watermarks.low)
            bytes = pageSize << order
        case .virtual, .automatic: return nil
        }
        guard let p else { return nil }
        if policy.zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes) }
        return p
    }

    /// A byte request the fast path did not serve, any size and placement.
    @usableFromInline
    func allocate(byteCount: Int, policy: AllocationPolicy, file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        // Uncharged: `attemptBeforeAdmission` goes on only when no group and no charging scope applies.
        if byteCount > 0 && byteCount <= maxContiguousBytes,
           let p = attemptBeforeAdmission(router.route(byteCount: byteCount, placement: policy.placement, charged: false),
                                          policy: policy, site: CallSite(file, line)) {
            return p
        }
        let site = CallSite(file, line)
        if let reason = router.impossibility(byteCount: byteCount, placement: policy.placement) {
            pages.reportInvalid(InvalidRequest(operation: "allocate(byteCount: \(byteCount))", reason: reason, site: site))
            return nil
        }
        let scope = AllocationScope.current
        let charged = (policy.group ?? scope.charging) != nil
        return serve(router.route(byteCount: byteCount, placement: policy.placement, charged: charged),
                     byteCount: byteCount, policy: policy, guarantee: nil, site: site, scope: scope)
    }

    /// A page request the fast path did not serve.
    @usableFromInline
    func allocatePages(order: Int, policy: AllocationPolicy, file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        if order >= 0 && order <= maxOrder,
           let p = attemptBeforeAdmission(.pages(order: order), policy: policy, site: CallSite(file, line)) {
            return p
        }
        let site = CallSite(file, line)
        guard order >= 0 && order <= maxOrder else {
            pages.reportInvalid(InvalidRequest(operation: "allocatePages(order: \(order))",
                                               reason: "order must be in 0...\(maxOrder)", site: site))
            return nil
        }
        return serve(.pages(order: order), byteCount: pageSize << order, policy: policy, guarantee: nil, site: site,
                     request: .pages(bytes: 0, order: order))
    }

    /// An object request of the cache at `index` (an `ObjectCache`) that the fast path did not serve.
    @usableFromInline
    func allocateObject(index: Int, policy: AllocationPolicy, guarantee: Guarantee?,
                        file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        // A destroyed cache (its layout is checked-only from then on): one report and nil, which a
        // guaranteed call turns into its trap; the retry loop would report every attempt.
        if router.slab.layouts[index].checkedOnly != 0 {
            let cache = router.slab.cache(index)
            if cache.central.withLock({ $0.destroyed }) {
                pages.reportInvalid(InvalidRequest(operation: "allocate from \(cache.name)", reason: "the cache was destroyed",
                                                   site: CallSite(file, line)))
                return nil
            }
        }
        if guarantee == nil,
           let p = attemptBeforeAdmission(.object(index: index), policy: policy, site: CallSite(file, line)) {
            return p
        }
        return serve(.object(index: index), byteCount: router.slab.objectSize(index), policy: policy, guarantee: guarantee,
              site: CallSite(file, line))
    }

    /// A guaranteed request: never returns nil; an impossible one traps at
    /// once with the call site, instead of looping for ever.
    @usableFromInline
    func allocateGuaranteed(byteCount: Int, guarantee: Guarantee, file: StaticString, line: UInt) -> UnsafeMutableRawPointer {
        let site = CallSite(file, line)
        if let reason = router.impossibility(byteCount: byteCount, placement: .automatic) {
            let message = "swift-mm: allocateGuaranteed(byteCount: \(byteCount), .\(guarantee)) at \(site) can never be met: \(reason)"
            pages.reportInvalid(InvalidRequest(operation: "allocateGuaranteed(byteCount: \(byteCount))", reason: reason, site: site))
            preconditionFailure(message, file: file, line: line)
        }
        let scope = AllocationScope.current
        let charged = scope.charging != nil
        guard let p = serve(router.guaranteedRoute(byteCount: byteCount, charged: charged), byteCount: byteCount,
                            policy: .standard, guarantee: guarantee, site: site, scope: scope) else {
            preconditionFailure("swift-mm: a guaranteed allocation returned nil (\(byteCount) bytes at \(site))")
        }
        return p
    }

    /// Admits a request on `route` and serves it.
    private func serve(_ route: Route, byteCount: Int, policy: AllocationPolicy, guarantee: Guarantee?,
                       site: CallSite, request request_: RequestDescription? = nil,
                       scope: AllocationScope? = nil) -> UnsafeMutableRawPointer? {
        var request: RequestDescription
        var cacheName: String?
        switch route {
        case .object(let index):
            cacheName = router.slab.cache(index).name
            request = .object(bytes: byteCount, cache: cacheName!)
        case .pages(let order): request = .pages(bytes: byteCount, order: order)
        case .virtual, .automatic:
            request = .pages(bytes: byteCount, order: min(maxOrder, PlacementRouter.order(forBytes: byteCount)))
        }
        if let given = request_ { request = given }
        guard case .proceed(var context) = admit(byteCount: byteCount, policy: policy, guarantee: guarantee, site: site,
                                                 request: request, cache: cacheName, scope: scope) else { return nil }
        var route = route
        if context.group != nil, case .object(let index) = route {
            // Charged objects come from the cache's accounted twin, charged one by one.
            switch router.slab.accountedTwin(of: index) {
            case .success(let twin):
                route = .object(index: twin)
            case .failure(let error):
                pages.reportInvalid(InvalidRequest(operation: "charged allocate from \(cacheName ?? "?")",
                                                   reason: "its accounted twin cannot be made: \(error)", site: site))
                return nil
            }
        }
        // R8, R9: the charge comes first; the request fails, waits or force-charges at max.
        if let group = context.group {
            let bytes = router.chargeBytes(of: route)
            guard charge(bytes, to: group, context) else { return nil }
            context.chargedBytes = bytes
        }
        let p = serve(route, context)
        if p == nil, let group = context.group { group.uncharge(context.chargedBytes) }
        if p == nil, case .virtual = route { router.virtual.countFailure() }
        if p == nil, case .automatic = route { router.virtual.countFailure() }
        return p
    }
}

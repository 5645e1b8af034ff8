// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Checking pointers against the page descriptors: every free and size
/// query the fast path did not accept is validated here and a violation
/// is named precisely. Kernel analogue: `free_pages_check` / `bad_page`.
extension PageAllocator {
    /// The order of the live block that starts at `pointer`; otherwise the
    /// violation is reported (trapping by default) and the answer is nil.
    @usableFromInline
    func liveOrder(of pointer: UnsafeMutableRawPointer, operation: String) -> Int? {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: arena.directMap)
        if offset < UInt(arena.capacity) && offset & UInt(pageSize - 1) == 0 {
            let f = arena.frames[Int(offset >> UInt(pageShift))]
            if f.state == PageState.allocated.rawValue { return Int(f.order) }
        }
        // Validate as an order-0 free to classify the problem, under the caller's name.
        if var violation = validateFree(pointer, order: 0, operation: operation) {
            if violation.kind == .misalignedPointer || violation.kind == .wrongOrder {
                let pfn = Int(offset >> UInt(pageShift))
                if let head = headOfFreeBlock(containing: pfn) {
                    // A pointer into free memory: an object whose slab went back to the page
                    // allocator, freed again (or a pointer that was never allocated).
                    violation = HardeningViolation(
                        kind: .doubleFree, operation: operation, pointer: violation.pointer,
                        detail: "double free (or never allocated): page \(pfn) is free, in the free block at page \(head); the allocation it belonged to (an object of a slab since returned, or pages) was freed already")
                } else {
                    violation = HardeningViolation(kind: .interiorPointer, operation: operation, pointer: violation.pointer,
                                                   detail: "not the start of an allocation: \(violation.detail)")
                }
            }
            report(violation)
        }
        return nil
    }

    /// The head of the free (listed or per-thread cached) block that holds
    /// page `pfn`, or nil when that page is allocated or was never used.
    func headOfFreeBlock(containing pfn: Int) -> Int? {
        let isFree = { (state: UInt8) in state == PageState.free.rawValue || state == PageState.cached.rawValue }
        if isFree(arena.frames[pfn].state) { return pfn }
        guard arena.frames[pfn].state == PageState.tail.rawValue else { return nil }
        for o in 1...maxOrder {
            let head = pfn & ~((1 << o) - 1)
            let h = arena.frames[head]
            guard h.state != PageState.tail.rawValue, Int(h.order) >= o else { continue }
            return isFree(h.state) ? head : nil
        }
        return nil
    }

    /// Checks a `freePages` call against the descriptors; `nil` when valid.
    func validateFree(_ pointer: UnsafeMutableRawPointer, order: Int, operation: String? = nil) -> HardeningViolation? {
        let address = UInt(bitPattern: pointer)
        let offset = address &- UInt(bitPattern: arena.directMap)
        // The operation's name is made only for a report: a valid free creates no String.
        func violation(_ kind: HardeningViolation.Kind, _ detail: String) -> HardeningViolation {
            HardeningViolation(kind: kind, operation: operation ?? "freePages(order: \(order))", pointer: address, detail: detail)
        }
        guard offset < UInt(arena.capacity) else {
            return violation(.foreignPointer, "not inside the arena (0x\(String(UInt(bitPattern: arena.directMap), radix: 16)) + \(arena.capacity >> 20) MiB)")
        }
        guard order >= 0 && order <= maxOrder else {
            return violation(.wrongOrder, "order \(order) is outside 0...\(maxOrder)")
        }
        let pfn = Int(offset >> UInt(pageShift))
        guard offset & UInt((pageSize << order) - 1) == 0 else {
            return violation(.misalignedPointer, "an order-\(order) block starts on a multiple of \(pageSize << order) bytes; this is page \(pfn) + \(offset & UInt(pageSize - 1)) bytes")
        }
        let f = arena.frames[pfn]
        switch PageState(rawValue: f.state) {
        case .allocated:
            if f.owner != 0 {
                return violation(.wrongAllocator, "page \(pfn) is a slab page of an object cache: free its objects with deallocate(_:)")
            }
            if Int(f.order) != order {
                return violation(.wrongOrder, "page \(pfn) heads an allocated order-\(f.order) block")
            }
            return nil
        case .free, .cached:
            if f.flags & PageFrame.flagEverAllocated != 0 {
                return violation(.doubleFree, "page \(pfn) is already free (order-\(f.order) block\(f.state == PageState.cached.rawValue ? " in a per-thread list" : ""))")
            }
            return violation(.neverAllocated, "page \(pfn) heads a free order-\(f.order) block that was never allocated")
        case .tail, .none:
            // Find the block that contains this page.
            for o in 1...maxOrder {
                let head = pfn & ~((1 << o) - 1)
                let h = arena.frames[head]
                guard h.state != PageState.tail.rawValue, Int(h.order) >= o else { continue }
                if h.state == PageState.allocated.rawValue {
                    return violation(.interiorPointer, "page \(pfn) is inside the allocated order-\(h.order) block at page \(head)")
                }
                return violation(.neverAllocated, "page \(pfn) is inside the free order-\(h.order) block at page \(head)")
            }
            return violation(.neverAllocated, "page \(pfn) is not the start of any block")
        }
    }

    func report(_ violation: HardeningViolation) {
        hardeningViolations.wrappingAdd(1, ordering: .relaxed)
        events.emit(.hardeningViolation(violation))
        if hardeningAction == .trap {
            fatalError("swift-mm: \(violation.description)")
        }
    }

    func reportInvalid(_ request: InvalidRequest) {
        invalidRequests.wrappingAdd(1, ordering: .relaxed)
        events.emit(.invalidRequest(request))
    }
}

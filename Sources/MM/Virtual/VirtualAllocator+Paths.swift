// SPDX-License-Identifier: Apache-2.0

/// What one vmalloc attempt came to.
enum VirtualAttempt {
    /// The area's address.
    case mapped(UnsafeMutableRawPointer)
    /// Not enough pages above the floor (every block gathered went back).
    case noPages(gathered: Int, needed: Int)
    /// The pages were there but no mapping could be made (map count,
    /// address space, the OS); the blocks went back.
    case noMapping(reason: String)
}

extension VirtualAllocator {
    /// vmalloc of `byteCount` bytes: buddy blocks taken largest first (never
    /// below `min`), then single pages down to `floor`, charged to `groupID`,
    /// and mapped into one area. Never blocks: if it cannot gather every page
    /// or make the mapping, the blocks go back and the slow path above decides
    /// what to do. Kernel analogue: `__vmalloc_node_range` (`vm_area_alloc_pages`).
    ///
    /// The area's memory is a mapping of its own, so its frames' direct-map
    /// memory is not used: blocks of order ≥ 1 are taken released (never
    /// touched, or returned to the OS) where possible, which costs no discard
    /// and leaves the warm blocks to the direct map's users; the others are
    /// discarded when the area is mapped.
    func allocate(byteCount: Int, floor: Int, chargedTo groupID: UInt32, site: CallSite?) -> VirtualAttempt {
        let total = (byteCount + pageSize - 1) >> pageShift
        // `resident`: the block may hold memory in the direct map, which mapping the area discards.
        var blocks: [(pfn: Int, order: Int, resident: Bool)] = []
        func pfn(_ p: UnsafeMutableRawPointer) -> Int {
            Int((UInt(bitPattern: p) - UInt(bitPattern: pages.arena.directMap)) >> UInt(pageShift))
        }
        func giveBack() {
            // Never charged (the slow path charges a request once it succeeds): no uncharge either.
            for b in blocks { pages.arena.frames[b.pfn].group = 0 }
            for b in blocks {
                let address = pages.arena.address(ofPage: b.pfn)
                if b.resident { pages.freeSlow(address, order: b.order) } else { pages.freeReleased(address, order: b.order) }
            }
            blocks.removeAll()
        }
        let largeFloor = Swift.max(floor, pages.watermarks.min)
        var remaining = total
        while remaining > 0 {
            var got: (pfn: Int, order: Int, resident: Bool)?
            var order = Swift.min(maxOrder, Int.bitWidth - 1 - remaining.leadingZeroBitCount)
            while order >= 1 && got == nil {
                if let block = pages.allocateReleased(order: order, floor: largeFloor, chargedTo: groupID) {
                    got = (pfn(block.pointer), order, !block.released)
                }
                order -= 1
            }
            if got == nil {
                guard let p = pages.allocate(order: 0, floor: floor, chargedTo: groupID) else {
                    let gathered = total - remaining
                    giveBack()
                    return .noPages(gathered: gathered, needed: total)
                }
                got = (pfn(p), 0, true)
            }
            blocks.append(got!)
            remaining -= 1 << got!.order
        }
        switch map(blocks: blocks, requested: byteCount, site: site) {
        case .success(let address):
            return .mapped(UnsafeMutableRawPointer(bitPattern: address)!)
        case .failure(let failure):
            giveBack()
            return .noMapping(reason: failure.reason)
        }
    }

    /// vfree: unmaps the area at `pointer` and returns its blocks; a pointer
    /// that starts no live area is reported (trapping by default).
    func free(_ pointer: UnsafeMutableRawPointer) {
        switch unmap(pointer) {
        case .success(let blocks):
            recordFree?(pointer)
            // Their direct-map memory was discarded (or never resident): they go back released.
            for b in blocks { pages.freeReleased(pages.arena.address(ofPage: b.pfn), order: b.order) }
        case .failure(let kind):
            pages.report(HardeningViolation(kind: kind, operation: "deallocate", pointer: UInt(bitPattern: pointer),
                                            detail: "vmalloc region: \(kind == .interiorPointer ? "inside a live area, not at its start" : kind == .doubleFree ? "the area was already freed" : "no area starts here")"))
        }
    }
}

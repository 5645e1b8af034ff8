// SPDX-License-Identifier: Apache-2.0

// Invariant checks walk every page descriptor and slab: debug builds (and
// builds with `-Xswiftc -DMM_INTERNAL_CHECKS`) only, like swift-collections'
// `_checkInvariants()`. Tests call them after every stress phase.
#if DEBUG || MM_INTERNAL_CHECKS
extension MemorySystem {
    /// Checks the allocator's invariants (every page in exactly one free or
    /// allocated block, free blocks maximally merged, lists and counters in
    /// agreement; the calling thread's magazines and every depot holding
    /// free, canaried slots of their cache) and traps with the list of
    /// problems if any is broken. Call it only while no other thread uses
    /// the system.
    func _checkInvariants() {
        let problems = _invariantViolations()
        precondition(problems.isEmpty, "swift-mm invariants broken:\n" + problems.joined(separator: "\n"))
    }

    /// The broken invariants in words (empty when all hold); see `_checkInvariants()`.
    func _invariantViolations() -> [String] {
        pages.invariantViolations() + slab.invariantViolations()
    }
}
#endif

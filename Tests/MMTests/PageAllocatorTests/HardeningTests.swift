// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

/// Bad frees of pages: trapped by default (exit tests), or reported and
/// ignored with nothing lost.
@Suite("Page hardening")
struct HardeningTests {
    /// The bad frees, each performed on a fresh system.
    enum BadFree: String, CaseIterable, Codable, Sendable {
        case foreign, misaligned, neverAllocated, doubleFree, doubleFreeAfterMerge, wrongOrder, interior, badOrder

        var expectedKind: HardeningViolation.Kind {
            switch self {
            case .foreign: return .foreignPointer
            case .misaligned: return .misalignedPointer
            case .neverAllocated: return .neverAllocated
            case .doubleFree, .doubleFreeAfterMerge: return .doubleFree
            case .wrongOrder, .badOrder: return .wrongOrder
            case .interior: return .interiorPointer
            }
        }

        func perform(on mm: MemorySystem) {
            switch self {
            case .foreign:
                let outside = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
                mm.freePages(outside, order: 0)
            case .misaligned:
                let p = mm.allocatePages(order: 2)!
                mm.freePages(p + pageSize, order: 2)
            case .neverAllocated:
                // The last page of the arena is never handed out in this test.
                mm.freePages(mm.pageFastPath.directMap + (mm.configuration.capacity - pageSize), order: 0)
            case .doubleFree:
                let p = mm.allocatePages(order: 0)!
                mm.freePages(p, order: 0)
                mm.freePages(p, order: 0)
            case .doubleFreeAfterMerge:
                let p = mm.allocatePages(order: 4)!
                mm.freePages(p, order: 4)  // merges back into a larger block
                mm.freePages(p, order: 4)
            case .wrongOrder:
                let p = mm.allocatePages(order: 1)!
                mm.freePages(p, order: 0)
            case .interior:
                let p = mm.allocatePages(order: 3)!
                mm.freePages(p + 2 * pageSize, order: 1)
            case .badOrder:
                let p = mm.allocatePages(order: 0)!
                mm.freePages(p, order: 11)
            }
        }
    }

    @Test("each bad free traps by default, naming the pointer and the problem", arguments: BadFree.allCases)
    func traps(_ bad: BadFree) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [bad = bad as BadFree] in
            let mm = try makeSystem()
            bad.perform(on: mm)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("swift-mm: hardening violation: \(bad.expectedKind.rawValue)"), "stderr: \(stderr)")
        #expect(stderr.contains("freePages(order:"))
        #expect(stderr.contains("0x"))
    }

    @Test("in report mode each bad free is an event, and nothing is freed or lost", arguments: BadFree.allCases)
    func reports(_ bad: BadFree) throws {
        let mm = try makeSystem(hardening: .report)
        let recorder = EventRecorder(mm)
        bad.perform(on: mm)
        #expect(recorder.violations.map(\.kind) == [bad.expectedKind])
        #expect(mm.statistics()[counter: "hardening_violation"] == 1)
        #expect(mm._invariantViolations() == [])
    }

    @Test("a reported bad free leaves the block allocated and usable")
    func nothingLost() throws {
        let mm = try makeSystem(hardening: .report)
        let p = try #require(mm.allocatePages(order: 2))
        let freeBefore = mm.statistics().freeBytes
        mm.freePages(p, order: 1)  // wrong order: ignored
        #expect(mm.statistics().freeBytes == freeBefore)
        mm.freePages(p, order: 2)  // the right free still works
        #expect(mm.statistics().freeBytes == freeBefore + 4 * pageSize)
    }
}

// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

@Suite("Group removal")
struct GroupRemovalTests {
    @Test("removeGroup is refused while the group is charged or has children, then succeeds; a removed group cannot be charged")
    func removal() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let recorder = EventRecorder(mm)
        let parent = mm.makeGroup(name: "tenant")
        let child = mm.makeGroup(name: "tenant-cache", parent: parent)
        var policy = AllocationPolicy.standard
        policy.group = child
        let p = try #require(mm.allocate(byteCount: 8192, policy: policy))
        #expect(throws: MemoryGroupError.self) { try mm.removeGroup(child) }
        do { try mm.removeGroup(child) } catch { #expect(error.code == .hasUsage) }
        do { try mm.removeGroup(parent) } catch { #expect(error.code == .hasUsage) }
        mm.deallocate(p)
        do { try mm.removeGroup(parent) } catch { #expect(error.code == .hasChildren) }
        try mm.removeGroup(child)
        #expect(child.isRemoved)
        do { try mm.removeGroup(child) } catch { #expect(error.code == .alreadyRemoved) }
        try mm.removeGroup(parent)
        #expect(mm.statistics().groups.isEmpty)
        // Charging a removed group: nil and an invalid request; a guaranteed request is served uncharged.
        #expect(mm.allocate(byteCount: 64, policy: policy) == nil)
        #expect(recorder.invalidRequests.last?.reason.contains("removed") == true)
        let g = withAllocationScope(.charging(child)) { mm.allocateGuaranteed(byteCount: 64) }
        #expect(child.usage == 0)
        mm.deallocate(g)
        let other = try makeSystem()
        do { try other.removeGroup(mm.makeGroup(name: "elsewhere")) } catch { #expect(error.code == .foreignGroup) }
    }

    @Test("groups churned without removal do not pile up: one nobody refers to and that holds nothing is dropped")
    func churn() throws {
        let mm = try makeSystem(capacity: 16 << 20)
        let kept = mm.makeGroup(name: "kept")
        var policy = AllocationPolicy.standard
        for i in 0..<5000 {
            let g = mm.makeGroup(name: "short-lived-\(i)", parent: i % 2 == 0 ? kept : nil)
            policy.group = g
            if let p = mm.allocate(byteCount: 256, policy: policy) { mm.deallocate(p) }
        }
        policy.group = nil
        let names = mm.statistics().groups.map(\.name)
        #expect(names == ["kept"], "\(names.count) groups left")
        // A group that still holds memory stays even when nobody refers to it.
        do {
            policy.group = mm.makeGroup(name: "holder")
        }
        let held = try #require(mm.allocate(byteCount: 4096, policy: policy))
        policy.group = nil
        #expect(mm.statistics().groups.map(\.name).contains("holder"))
        mm.deallocate(held)
        #expect(!mm.statistics().groups.map(\.name).contains("holder"))
    }
}

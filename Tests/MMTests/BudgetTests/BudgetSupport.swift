// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Synchronization

/// A group-aware cache: objects kept per group, counted and freed per
/// group as `ShrinkControl.group` asks. Records which groups it was asked
/// about, and whether it was ever called without a group.
final class GroupAwareCache: Shrinker, @unchecked Sendable {  // mutable state behind `objects`
    let name: String
    let domain: ReclaimDomain? = nil
    let isGroupAware = true
    let objectSize: Int
    private let mm: MemorySystem
    private let objects = Locked<[ObjectIdentifier: (group: MemoryGroup, list: [UInt])]>([:])
    let askedFor = Locked<[String]>([])
    let calledWithoutGroup = Atomic<Int>(0)

    init(_ mm: MemorySystem, name: String = "group-aware", objectSize: Int = 4096) {
        self.mm = mm
        self.name = name
        self.objectSize = objectSize
    }

    /// Adds `count` objects charged to `group` (non-blocking, so filling never reclaims); returns how many.
    @discardableResult
    func fill(_ count: Int, group: MemoryGroup, policy: AllocationPolicy = .nonBlocking) -> Int {
        var p = policy
        p.group = group
        var added = 0
        for _ in 0..<count {
            guard let o = mm.allocate(byteCount: objectSize, policy: p) else { break }
            objects.withLock { $0[ObjectIdentifier(group), default: (group, [])].list.append(UInt(bitPattern: o)) }
            added += 1
        }
        return added
    }

    func count(of group: MemoryGroup) -> Int { objects.withLock { $0[ObjectIdentifier(group)]?.list.count ?? 0 } }

    func clear() {
        let all = objects.withLock { o -> [UInt] in defer { o = [:] }; return o.values.flatMap(\.list) }
        for a in all { mm.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
    }

    func countObjects(_ control: ShrinkControl) -> Int {
        guard let group = control.group else {
            calledWithoutGroup.wrappingAdd(1, ordering: .relaxed)
            return 0
        }
        askedFor.withLock { $0.append(group.name) }
        return count(of: group)
    }

    func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
        guard let group = control.group else {
            calledWithoutGroup.wrappingAdd(1, ordering: .relaxed)
            return .freed(0)
        }
        let victims = objects.withLock { o -> [UInt] in
            guard var entry = o[ObjectIdentifier(group)] else { return [] }
            let k = min(control.objectsToScan, entry.list.count)
            let taken = Array(entry.list.prefix(k))
            entry.list.removeFirst(k)
            o[ObjectIdentifier(group)] = entry
            return taken
        }
        for a in victims { mm.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
        return .freed(victims.count)
    }
}

/// A quiet system for budget tests, 16 MiB by default, background reclaim off.
func makeBudgetSystem(capacity: Int = 16 << 20, _ configure: (inout MemoryConfiguration) -> Void = { _ in }) throws -> MemorySystem {
    var config = MemoryConfiguration(capacity: capacity)
    config.logsEvents = false
    config.backgroundReclaim = false
    config.stallReportInterval = .milliseconds(50)
    config.oomReapTimeout = .milliseconds(500)
    configure(&config)
    return try MemorySystem(config)
}

/// A policy charged to `group`.
func charged(_ group: MemoryGroup, _ base: AllocationPolicy = .standard) -> AllocationPolicy {
    var p = base
    p.group = group
    return p
}

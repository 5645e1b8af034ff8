// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A unit that allocations are charged to, and the unit the OOM handler
/// picks victims among. Created with `MemorySystem.makeGroup`.
/// Kernel analogue: a memory cgroup.
///
/// Groups compare by identity.
public final class MemoryGroup: Sendable, Hashable {
    /// The group's name, for reports.
    public let name: String
    /// The enclosing group, charged hierarchically.
    public let parent: MemoryGroup?
    let usageBytes = Atomic<Int>(0)

    init(name: String, parent: MemoryGroup?) {
        self.name = name
        self.parent = parent
    }

    /// Bytes currently charged to this group and its descendants.
    public var usage: Int { usageBytes.load(ordering: .relaxed) }

    public static func == (a: MemoryGroup, b: MemoryGroup) -> Bool { a === b }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

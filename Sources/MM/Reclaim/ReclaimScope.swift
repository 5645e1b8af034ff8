// SPDX-License-Identifier: Apache-2.0

/// Which shrinkers one reclaim pass calls, and for which groups.
/// Kernel analogue: the memcg iteration of `shrink_node` (`mem_cgroup_iter`
/// under the target memcg, with `mem_cgroup_below_min/low` checks).
struct ReclaimScope: Sendable {
    /// The groups group-aware shrinkers are called for, one call each.
    var groups: [MemoryGroup]
    /// Whether shrinkers that are not group-aware are called (once).
    var includesUnaware: Bool
    /// Identifiers of the groups in `groups` that are below their effective
    /// `low`: what a shrinker frees from them counts a `low` event (R10).
    var lowProtected: Set<UInt32> = []

    /// Every shrinker, without groups (no group exists).
    static let everything = ReclaimScope(groups: [], includesUnaware: true)
}

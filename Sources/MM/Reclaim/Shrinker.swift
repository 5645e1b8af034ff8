// SPDX-License-Identifier: Apache-2.0

/// A cache that can give memory back under pressure.
/// Kernel analogue: `struct shrinker` with `count_objects`/`scan_objects`.
///
/// ```swift
/// final class InodeCache: Shrinker {
///     let name = "inode-cache"
///     let domain: ReclaimDomain? = .filesystem   // never called from .excluding(.filesystem) contexts
///     func countObjects(_ control: ShrinkControl) -> Int { cachedCount }
///     func scanObjects(_ control: ShrinkControl) -> ShrinkResult {
///         .freed(evictLeastRecentlyUsed(control.objectsToScan))
///     }
/// }
/// let registration = mm.registerShrinker(InodeCache())
/// ```
///
/// Shrinkers run inside the `.reclaiming` scope: allocations they make never
/// recurse into reclaim and may use the emergency reserves (R5).
public protocol Shrinker: AnyObject, Sendable {
    /// Name for statistics and reports.
    var name: String { get }
    /// What reclaiming this cache may call into; `nil` means it is safe to
    /// run from any context. A request that excludes this domain (or one
    /// containing it) never calls the shrinker.
    var domain: ReclaimDomain? { get }
    /// How expensive an object is to recreate; the scan target is
    /// proportional to `4 / seeks` (default 2; 0 scans half of what is freeable).
    var seeks: Int { get }
    /// A cheap estimate of the freeable objects; must not take locks that
    /// allocations may hold. Return 0 to be skipped.
    func countObjects(_ control: ShrinkControl) -> Int
    /// Frees up to `control.objectsToScan` objects: `.freed(n)`, or `.stop`
    /// when continuing could deadlock (the remaining work is deferred).
    func scanObjects(_ control: ShrinkControl) -> ShrinkResult
    /// Whether the shrinker keeps its objects per group: then reclaim calls
    /// it once per group it reclaims from, with `control.group` set to that
    /// group (never nil), and it counts and frees only objects charged to
    /// exactly that group. Reclaim for a group's limit (R8, R9) then takes
    /// only that subtree's objects, and protected groups (R10) are skipped.
    /// Default false. Kernel analogue: `SHRINKER_MEMCG_AWARE`.
    var isGroupAware: Bool { get }
}

extension Shrinker {
    /// The kernel's `DEFAULT_SEEKS`.
    public var seeks: Int { 2 }
    /// Not group-aware: called once per pass, whatever the groups.
    public var isGroupAware: Bool { false }
}

/// What a scan returned. Kernel analogue: the freed count or `SHRINK_STOP`.
public enum ShrinkResult: Sendable, Hashable {
    case freed(Int)
    case stop
}

/// The request being served, given to `countObjects` and `scanObjects`.
/// Kernel analogue: `struct shrink_control`.
public struct ShrinkControl: Sendable {
    /// How many objects to scan in this call (a batch).
    public var objectsToScan: Int
    /// The reclaim priority: 12 scans a 1/4096 slice of the cache, 0 all of it.
    public var priority: Int
    /// The allocation on whose behalf reclaim runs (`nil` for the background reclaimer).
    public var context: AllocationContext?
    /// For a group-aware shrinker: the group whose objects to count and
    /// free (never nil). For other shrinkers: the group the request is
    /// charged to, if any.
    public var group: MemoryGroup?
}

/// A registered shrinker; `unregister()` removes it. Safe while reclaim is
/// running: once it returns, the shrinker is not called again (a shrinker
/// may unregister itself from its own scan).
public final class ShrinkerRegistration: Sendable {
    private let registry: ShrinkerRegistry
    let id: Int

    init(registry: ShrinkerRegistry, id: Int) {
        self.registry = registry
        self.id = id
    }

    /// Removes the shrinker, waiting for a scan of it in progress on another thread.
    public func unregister() {
        registry.unregister(id)
    }
}

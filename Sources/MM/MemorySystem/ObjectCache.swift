// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A cache of fixed-size objects: allocation and free of one object are a
/// pop and a push on the calling thread's magazine in the common case.
/// Kernel analogue: `struct kmem_cache` made by `kmem_cache_create`,
/// `kmem_cache_alloc`, `kmem_cache_free`, `kmem_cache_destroy`.
///
/// ```swift
/// let inodes = try mm.makeObjectCache(name: "inode", size: 600, flags: [.reclaimable])
/// let inode = inodes.allocate()          // fallible, policy .standard
/// inodes.deallocate(inode!)
/// inodes.destroy()                       // reports every object still allocated
/// ```
///
/// A charged request (`policy.group`, or inside a `.charging` scope) is
/// served by the cache's accounted twin, `<name>-cg`, made at the first one
/// with the same geometry and flags; `deallocate` takes both kinds and
/// uncharges a charged object.
///
/// Objects may be freed on any thread (they go to that thread's magazine).
/// `destroy()` must not run concurrently with allocations or frees of this
/// cache (as in the kernel); dropping the last reference destroys the cache.
public final class ObjectCache: Sendable {
    /// Options of a cache. Kernel analogue: `SLAB_*` flags.
    public typealias Flags = ObjectCacheFlags

    /// The cache's name in slabinfo, events and fault-injection filters.
    public let name: String
    /// Usable bytes per object (at least 8).
    public let objectSize: Int
    /// Alignment of every object.
    public let alignment: Int
    /// The flags the cache was made with.
    public let flags: Flags
    @usableFromInline let objects: ObjectFastPath
    @usableFromInline let slab: SlabAllocator
    @usableFromInline let slowPath: SlowPath
    @usableFromInline let index: Int
    let cache: SlabCache
    private let destroyed = Atomic<Bool>(false)

    init(cache: SlabCache, slab: SlabAllocator, objects: ObjectFastPath, slowPath: SlowPath) {
        self.cache = cache
        self.objects = objects
        self.slab = slab
        self.slowPath = slowPath
        self.index = cache.index
        name = cache.name
        objectSize = cache.layout.size
        alignment = cache.layout.alignment
        flags = cache.flags
    }

    deinit { destroy() }

    /// Allocates one object; nil when the request fails (reported as for
    /// `MemorySystem.allocate`). `policy.placement` is ignored.
    /// Kernel analogue: `kmem_cache_alloc(cache, gfp)`.
    /// - Parameters:
    ///   - policy: what the request may do when memory is short.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    /// - Returns: an object, or nil.
    @inlinable @inline(__always)
    public func allocate(policy: AllocationPolicy = .standard,
                         file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer? {
        if let p = objects.allocate(index, policy: policy) { return p }
        // Charged requests try their fast path first (one call, off the uncharged path).
        if policy.group != nil { return allocateCharged(policy: policy, file: file, line: line) }
        return slowPath.allocateObject(index: index, policy: policy, guarantee: nil, file: file, line: line)
    }

    /// `allocate` of a charged request: the charged fast path on the cache's
    /// accounted twin once it exists (its first charged request makes it,
    /// through the slow path), else the slow path.
    @usableFromInline @inline(never)
    func allocateCharged(policy: AllocationPolicy, file: StaticString, line: UInt) -> UnsafeMutableRawPointer? {
        if let twin = slab.existingTwin(of: index),
           let p = SlowPath.allocateChargedObject(index: twin, policy: policy, slab: slab) {
            return p
        }
        return slowPath.allocateObject(index: index, policy: policy, guarantee: nil, file: file, line: line)
    }

    /// Allocates one object and never returns nil (see
    /// `MemorySystem.allocateGuaranteed`). Traps if the cache was destroyed.
    /// Kernel analogue: `kmem_cache_alloc(cache, GFP_KERNEL | __GFP_NOFAIL)`.
    /// - Parameters:
    ///   - guarantee: `.retryForever` (default) or `.useReserves`.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    /// - Returns: an object; never nil.
    @inlinable
    public func allocateGuaranteed(_ guarantee: Guarantee = .retryForever,
                                   file: StaticString = #fileID, line: UInt = #line) -> UnsafeMutableRawPointer {
        if let p = objects.allocate(index, policy: .standard)
            ?? slowPath.allocateObject(index: index, policy: .standard, guarantee: guarantee, file: file, line: line) {
            return p
        }
        preconditionFailure("swift-mm: allocateGuaranteed from object cache \(name) at \(file):\(line) can never be met: the cache was destroyed, or it is charged and its accounted twin cannot be made (see the invalidRequest event)")
    }

    /// Frees an object of this cache. An object of another cache, or any
    /// pointer that is not a live object, is a `hardeningViolation`.
    /// Kernel analogue: `kmem_cache_free`.
    /// - Parameter pointer: an object of this cache.
    @inlinable @inline(__always)
    public func deallocate(_ pointer: UnsafeMutableRawPointer) {
        let offset = UInt(bitPattern: pointer) &- UInt(bitPattern: objects.directMap)
        if offset < objects.capacityBytes {
            let owner = objects.owner(atOffset: offset)
            if owner == UInt32(truncatingIfNeeded: index &+ 1) {
                if !objects.free(pointer, offset: offset, owner: owner) { slab.freeSlow(pointer) }
                return
            }
        }
        slab.deallocateFromOtherSlab(pointer, expected: index)
    }

    /// Destroys the cache: returns every free object and slab to the page
    /// allocator and reports each object still allocated as a
    /// `hardeningViolation` of kind `.leakedObject` (without trapping); slabs
    /// with leaked objects stay until those objects are freed. Later
    /// allocations fail with an `invalidRequest`. Idempotent.
    /// Kernel analogue: `kmem_cache_destroy` ("Objects remaining on __kmem_cache_shutdown()").
    /// - Returns: the number of leaked objects.
    @discardableResult
    public func destroy() -> Int {
        guard !destroyed.exchange(true, ordering: .acquiringAndReleasing) else { return 0 }
        return slab.destroy(cache)
    }
}

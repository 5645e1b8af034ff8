// SPDX-License-Identifier: Apache-2.0

/// A typed object cache: slots for values of `Object`, handed out as
/// `CachedObject`s that deinitialise and free their slot when they go out
/// of scope. The safe layer above `ObjectCache` (which stays, explicitly
/// unsafe). Kernel analogue: `kmem_cache_create` for a struct type, with
/// the free done by ownership instead of by hand.
///
/// ```swift
/// struct Inode { var number: Int; var size: Int }
/// let inodes = try TypedObjectCache<Inode>(name: "inode", in: mm)
/// if let inode = inodes.allocate(initializingWith: Inode(number: 7, size: 0)) {
///     inode.value.size += 4096          // read and write in place
/// }                                     // deinitialised and freed here
/// let kept = inodes.allocateGuaranteed(initializingWith: Inode(number: 8, size: 0))
/// let value = kept.take()               // moved out; the slot is freed
/// // _ = kept.take()                    // error: 'kept' consumed more than once
/// ```
public final class TypedObjectCache<Object: ~Copyable>: Sendable {
    /// The untyped cache underneath.
    public let cache: ObjectCache

    /// Creates a cache whose slots fit `Object` (its size and alignment).
    /// - Parameters:
    ///   - name: the cache's name in slabinfo.
    ///   - flags: `.reclaimable`, `.redZone`, `.poison`, `.zeroOnFree`.
    ///   - system: the system the slabs come from.
    /// - Throws: `ObjectCacheError` as `MemorySystem.makeObjectCache` does.
    public init(name: String, flags: ObjectCache.Flags = [], in system: MemorySystem) throws(ObjectCacheError) {
        cache = try system.makeObjectCache(name: name, size: Swift.max(1, MemoryLayout<Object>.size),
                                           alignment: MemoryLayout<Object>.alignment, flags: flags)
    }

    /// A slot holding `value`, or nil when the allocation fails under
    /// `policy` (the value is then destroyed).
    /// - Parameters:
    ///   - value: the value to move into the slot.
    ///   - policy: as for `ObjectCache.allocate`.
    ///   - file: the call site's file, for reports (default: the caller's).
    ///   - line: the call site's line, for reports (default: the caller's).
    /// - Returns: the owner of the slot, or nil.
    public func allocate(initializingWith value: consuming Object, policy: AllocationPolicy = .standard,
                         file: StaticString = #fileID, line: UInt = #line) -> CachedObject<Object>? {
        guard let raw = cache.allocate(policy: policy, file: file, line: line) else { return nil }
        let typed = raw.bindMemory(to: Object.self, capacity: 1)
        typed.initialize(to: value)
        return CachedObject(typed, cache: cache)
    }

    /// A slot holding `value`; never fails (it waits, or with `.useReserves`
    /// also uses the OOM handler and the reserves).
    /// - Returns: the owner of the slot.
    /// - Parameters:
    ///   - value: the value to move into the slot.
    ///   - guarantee: `.retryForever` (default) or `.useReserves`.
    ///   - file: the call site's file, for reports.
    ///   - line: the call site's line, for reports.
    public func allocateGuaranteed(initializingWith value: consuming Object, _ guarantee: Guarantee = .retryForever,
                                   file: StaticString = #fileID, line: UInt = #line) -> CachedObject<Object> {
        let typed = cache.allocateGuaranteed(guarantee, file: file, line: line).bindMemory(to: Object.self, capacity: 1)
        typed.initialize(to: value)
        return CachedObject(typed, cache: cache)
    }
}

/// The owner of one object in a `TypedObjectCache`: unique (it cannot be
/// copied), it deinitialises the object and frees its slot when it goes out
/// of scope, or hands the value back with `take()`.
public struct CachedObject<Object: ~Copyable>: ~Copyable {
    private let pointer: UnsafeMutablePointer<Object>
    /// Retained by the owner (released when the slot is freed), so the cache
    /// outlives every object handed out even if its `TypedObjectCache` does not.
    private let cache: Unmanaged<ObjectCache>

    init(_ pointer: UnsafeMutablePointer<Object>, cache: ObjectCache) {
        self.pointer = pointer
        self.cache = .passRetained(cache)
    }

    /// The object, read and written in place.
    public var value: Object {
        _read { yield pointer.pointee }
        nonmutating _modify { yield &pointer.pointee }
    }

    /// Moves the object out and frees its slot.
    /// - Returns: the object.
    public consuming func take() -> Object {
        let value = pointer.move()
        cache.takeUnretainedValue().deallocate(UnsafeMutableRawPointer(pointer))
        cache.release()
        discard self
        return value
    }

    deinit {
        pointer.deinitialize(count: 1)
        cache.takeUnretainedValue().deallocate(UnsafeMutableRawPointer(pointer))
        cache.release()
    }
}

/// An owned run of bytes from a `MemorySystem`, freed when it goes out of
/// scope: the safe counterpart of `allocate(byteCount:)` + `deallocate`.
/// Unique (it cannot be copied); pass it on with `consume`.
///
/// ```swift
/// guard var buffer = MemoryBuffer(byteCount: 64 << 10, policy: .failFast, in: mm) else { return }
/// buffer.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
/// let checksum = buffer.withUnsafeBytes { $0.reduce(0, &+) }
/// ```
/// Kernel analogue: `kvmalloc` + `kvfree` with the free done by ownership.
public struct MemoryBuffer: ~Copyable {
    private let base: UnsafeMutableRawPointer
    /// The bytes asked for (the allocation may be larger: `usableByteCount`).
    public let byteCount: Int
    private let system: MemorySystem

    /// `byteCount` bytes under `policy`, or nil when that fails (zero,
    /// negative or impossible sizes included; the system reports them).
    public init?(byteCount: Int, policy: AllocationPolicy = .standard, in system: MemorySystem,
                 file: StaticString = #fileID, line: UInt = #line) {
        guard let p = system.allocate(byteCount: byteCount, policy: policy, file: file, line: line) else { return nil }
        base = p
        self.byteCount = byteCount
        self.system = system
    }

    /// `byteCount` bytes that never fail (see `allocateGuaranteed`).
    public init(byteCount: Int, guarantee: Guarantee = .retryForever, in system: MemorySystem,
                file: StaticString = #fileID, line: UInt = #line) {
        base = system.allocateGuaranteed(byteCount: byteCount, guarantee, file: file, line: line)
        self.byteCount = byteCount
        self.system = system
    }

    /// The bytes the allocation really has (its size class or pages).
    public var usableByteCount: Int { system.usableSize(of: base) }

    /// Calls `body` with the bytes, read-only.
    public func withUnsafeBytes<R: ~Copyable, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: base, count: byteCount))
    }

    /// Calls `body` with the bytes, writable.
    public mutating func withUnsafeMutableBytes<R: ~Copyable, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: base, count: byteCount))
    }

    deinit {
        system.deallocate(base)
    }
}

extension MemorySystem {
    /// Runs `body` with `byteCount` temporary bytes, freed when it returns
    /// (or throws); returns nil without calling `body` when the allocation
    /// fails under `policy`. Kernel analogue: a `kmalloc`/`kfree` pair around a block.
    /// - Returns: what `body` returned, or nil.
    public func withTemporaryAllocation<R: ~Copyable, E: Error>(
        byteCount: Int, policy: AllocationPolicy = .standard, file: StaticString = #fileID, line: UInt = #line,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R? {
        guard let p = allocate(byteCount: byteCount, policy: policy, file: file, line: line) else { return nil }
        defer { deallocate(p) }
        return try body(UnsafeMutableRawBufferPointer(start: p, count: byteCount))
    }

    /// Runs `body` with `byteCount` temporary bytes that never fail to be
    /// allocated (`guarantee`), freed when it returns.
    /// - Returns: what `body` returned.
    public func withTemporaryAllocation<R: ~Copyable, E: Error>(
        byteCount: Int, guarantee: Guarantee, file: StaticString = #fileID, line: UInt = #line,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let p = allocateGuaranteed(byteCount: byteCount, guarantee, file: file, line: line)
        defer { deallocate(p) }
        return try body(UnsafeMutableRawBufferPointer(start: p, count: byteCount))
    }
}

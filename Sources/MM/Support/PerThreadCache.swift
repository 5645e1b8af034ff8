// SPDX-License-Identifier: Apache-2.0
import CMMShims
import Glibc
import Synchronization

/// What every per-thread cache starts with: the system it serves and a
/// drain request other threads may set.
@usableFromInline
struct PerThreadCacheHeader: ~Copyable {
    /// The attached system's identifier while its fast path may use the
    /// cache, 0 while that system's fast-path gate is closed (or the cache is
    /// attached to none): the object fast path compares it with its system's
    /// constant identifier, one load and one compare. Written under the
    /// registry's lock: by the owner thread when it attaches the cache, by
    /// any thread that opens or closes the system's gate.
    @usableFromInline let fastPathKey: Atomic<UInt64>
    /// The system whose memory the cache holds (0: none). The owner thread
    /// writes it when it attaches the cache; a system being dropped clears
    /// it; slow paths compare it with their system's identifier.
    @usableFromInline let systemID: Atomic<UInt64>
    /// Set by another thread to ask the owner to return what it holds at its
    /// next slow path (kernel analogue: the IPI of `drain_all_pages`).
    let drainRequest: Atomic<Int>
}

/// A kind of per-thread cache: the record a thread keeps, and the C
/// thread-local slot that points to it. The page allocator's lists and the
/// slab layer's magazines are the two kinds.
///
/// Each kind extends `PerThreadCache where Kind == …` with a typed `record`
/// accessor (its record type is noncopyable: it holds atomics, and Swift's
/// associated types cannot be noncopyable yet).
@usableFromInline
protocol PerThreadCacheKind {
    /// Bytes of the record after the header (`MemoryLayout<Record>.size`).
    static var recordByteCount: Int { get }
    /// The calling thread's slot for this kind (initial-exec TLS: one
    /// `%fs`-relative address, no allocation, no lazy initialisation).
    static var threadSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?> { get }
    /// The slot the fast paths read: `threadSlot`'s value while the thread
    /// holds no `ReclaimCheckedMutex`, `emptyRecord` while it holds one.
    static var fastPathSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?> { get }
    /// What both slots hold while the thread has no record: nil, or a
    /// read-only record whose fast-path key no system has (so fast paths
    /// need no null test).
    static var emptyRecord: UnsafeMutableRawPointer? { get }
    /// Puts a fresh record in place at `record` (the memory is zero-filled).
    static func initializeRecord(at record: UnsafeMutableRawPointer)
    /// The key whose destructor hands the thread's cache back at thread exit.
    static var threadExitKey: ThreadExitKey { get }
}

/// One thread's cache of one kind: a header and a typed record in an
/// anonymous mapping reached through a thread-local slot. Only the owner
/// thread pushes and pops; fields that other threads read (counts for
/// statistics, the drain request) are relaxed atomics, which are plain
/// loads and stores on x86-64 and AArch64.
///
/// The mapping is lazy: parts of the record a thread never touches cost no
/// memory. Kernel analogue: the per-CPU areas (`struct per_cpu_pages`,
/// `struct kmem_cache_cpu`), per thread here.
@usableFromInline
struct PerThreadCache<Kind: PerThreadCacheKind>: Hashable, @unchecked Sendable {  // the owner thread writes; others only as documented
    @usableFromInline let header: UnsafeMutablePointer<PerThreadCacheHeader>

    @inlinable @inline(__always)
    init(header: UnsafeMutablePointer<PerThreadCacheHeader>) { self.header = header }

    /// The header sits alone in the first cache line: other threads write
    /// its drain request, and it must not share a line with the hot record.
    @inlinable @inline(__always)
    static var recordOffset: Int { 64 }

    /// Bytes of one thread's mapping, whole pages.
    static var byteCount: Int {
        (recordOffset + Kind.recordByteCount + 4095) & ~4095
    }

    /// The calling thread's cache, if it has one.
    @inlinable @inline(__always)
    static var current: PerThreadCache? {
        guard let raw = Kind.threadSlot.pointee, raw != Kind.emptyRecord else { return nil }
        return PerThreadCache(header: raw.assumingMemoryBound(to: PerThreadCacheHeader.self))
    }

    /// Where the kind's record starts.
    @inlinable @inline(__always)
    var recordBase: UnsafeMutableRawPointer { UnsafeMutableRawPointer(header) + Self.recordOffset }

    /// The calling thread's cache if the fast path may use it (no
    /// `ReclaimCheckedMutex` held): one thread-local load.
    @inlinable @inline(__always)
    static var currentForFastPath: PerThreadCache? {
        guard let raw = Kind.fastPathSlot.pointee, raw != Kind.emptyRecord else { return nil }
        return PerThreadCache(header: raw.assumingMemoryBound(to: PerThreadCacheHeader.self))
    }

    /// The system whose memory the cache holds (0: none).
    @inlinable @inline(__always)
    var systemID: UInt64 { header.pointee.systemID.load(ordering: .relaxed) }

    /// The attached system's identifier while its fast path is open, else 0.
    @inlinable @inline(__always)
    var fastPathKey: UInt64 { header.pointee.fastPathKey.load(ordering: .relaxed) }

    /// Opens or closes the attached system's fast path for this cache
    /// (under the registry's lock).
    func setFastPathOpen(_ open: Bool) {
        header.pointee.fastPathKey.store(open ? systemID : 0, ordering: .relaxed)
    }

    /// Asks the owner to return what it holds at its next slow path.
    func requestDrain() { header.pointee.drainRequest.store(1, ordering: .relaxed) }

    /// Whether a drain was requested; clears the request (owner thread).
    func takeDrainRequest() -> Bool {
        guard header.pointee.drainRequest.load(ordering: .relaxed) != 0 else { return false }
        header.pointee.drainRequest.store(0, ordering: .relaxed)
        return true
    }

    /// Attaches the cache to `systemID` (0: none), its fast path open or
    /// closed, and clears any drain request (under the registry's lock).
    func setSystem(_ systemID: UInt64, fastPathOpen: Bool) {
        header.pointee.systemID.store(systemID, ordering: .relaxed)
        header.pointee.fastPathKey.store(fastPathOpen ? systemID : 0, ordering: .relaxed)
        header.pointee.drainRequest.store(0, ordering: .relaxed)
    }

    // MARK: Creation and destruction

    /// The calling thread's cache, created (attached to no system) on first use.
    static func currentOrCreate() -> PerThreadCache {
        if let cache = current { return cache }
        let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else {
            fatalError("swift-mm: cannot map \(byteCount) bytes for a thread's \(Kind.self) (errno \(errno))")
        }
        let header = raw.bindMemory(to: PerThreadCacheHeader.self, capacity: 1)
        header.initialize(to: PerThreadCacheHeader(fastPathKey: Atomic(0), systemID: Atomic(0), drainRequest: Atomic(0)))
        let cache = PerThreadCache(header: header)
        Kind.initializeRecord(at: cache.recordBase)
        Kind.threadSlot.pointee = raw
        ThreadSlots.refreshFastPathSlots()
        pthread_setspecific(Kind.threadExitKey.key, raw)
        return cache
    }

    /// Unmaps the cache (its contents must have been returned or forgotten).
    /// If it is the calling thread's, the thread's slot is cleared first.
    func destroy() {
        if Kind.threadSlot.pointee == UnsafeMutableRawPointer(header) {
            Kind.threadSlot.pointee = Kind.emptyRecord
            ThreadSlots.refreshFastPathSlots()
        }
        munmap(UnsafeMutableRawPointer(header), Self.byteCount)
    }
}

/// A `pthread_key_t` whose destructor runs a Swift function at thread exit.
/// Kernel analogue: none; the kernel drains per-CPU lists on CPU hot-unplug.
@usableFromInline
final class ThreadExitKey: Sendable {
    let key: pthread_key_t

    init(_ destructor: @convention(c) (UnsafeMutableRawPointer?) -> Void) {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, destructor)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        self.key = key
    }
}

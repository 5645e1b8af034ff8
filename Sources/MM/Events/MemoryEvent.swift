// SPDX-License-Identifier: Apache-2.0
import Glibc

/// A source location, from the `#fileID`/`#line` defaults of the public entry points.
///
/// A plain value of three words (the file name's UTF-8 bytes, their count and
/// the line), so that the slow path carries and copies it without creating a
/// `String` or touching a reference count: the file's `String` is made only
/// when a report reads it. File names given as a `String` are kept, once per
/// distinct name, for the life of the process.
public struct CallSite: Sendable, Hashable, CustomStringConvertible {
    /// The address of the file name's UTF-8 bytes (immutable for the life
    /// of the process: a string literal's, or an interned copy), and their count.
    private var fileAddress: UInt
    private var fileByteCount: Int
    private var fileBytes: UnsafeRawPointer { UnsafeRawPointer(bitPattern: fileAddress)! }
    /// The line in that file.
    public var line: UInt

    /// The file, as `#fileID` gives it (`Module/File.swift`).
    public var file: String {
        get { String(decoding: UnsafeRawBufferPointer(start: fileBytes, count: fileByteCount), as: UTF8.self) }
        set { (fileAddress, fileByteCount) = CallSiteFileNames.intern(newValue) }
    }

    /// A call site from a file name and a line.
    public init(file: String, line: UInt) {
        (fileAddress, fileByteCount) = CallSiteFileNames.intern(file)
        self.line = line
    }

    /// A call site from `#fileID` and `#line`. Creates no `String`.
    public init(_ file: StaticString, _ line: UInt) {
        if file.hasPointerRepresentation {
            fileAddress = UInt(bitPattern: file.utf8Start)
            fileByteCount = file.utf8CodeUnitCount
        } else {
            (fileAddress, fileByteCount) = CallSiteFileNames.intern(file.description)
        }
        self.line = line
    }

    /// A one-line description, as events and reports print it.
    public var description: String { "\(file):\(line)" }

    /// Whether two sites name the same file and line.
    public static func == (a: CallSite, b: CallSite) -> Bool {
        a.line == b.line && a.fileByteCount == b.fileByteCount
            && (a.fileAddress == b.fileAddress || memcmp(a.fileBytes, b.fileBytes, a.fileByteCount) == 0)
    }

    /// Hashes the file's bytes and the line.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes: UnsafeRawBufferPointer(start: fileBytes, count: fileByteCount))
        hasher.combine(line)
    }
}

/// File names of call sites made from a `String`: one immortal copy per
/// distinct name. Never used for `#fileID` literals (the allocation paths).
enum CallSiteFileNames {
    /// Name → address of its immortal UTF-8 copy.
    private static let table = Locked<[String: UInt]>([:])

    static func intern(_ name: String) -> (address: UInt, count: Int) {
        let address = table.withLock { table -> UInt in
            if let known = table[name] { return known }
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, name.utf8.count), alignment: 1)
            _ = copy.initializeMemory(as: UInt8.self, from: name.utf8)
            table[name] = UInt(bitPattern: copy.baseAddress)
            return UInt(bitPattern: copy.baseAddress)
        }
        return (address, name.utf8.count)
    }
}

/// Something the memory system reports to its event sinks.
/// Kernel analogue: `warn_alloc`, the stall warning, the OOM report, lockdep
/// splats, `slab_debug` "BUG" reports, `WARN_ON` of bad arguments.
public enum MemoryEvent: Sendable, CustomStringConvertible {
    /// An allocation failed and returned nil. Kernel: "page allocation failure".
    case allocationFailure(AllocationFailure)
    /// A request has kept retrying for `stallReportInterval` (and again every
    /// interval). Kernel: "page allocation stall", XFS's "possible memory
    /// allocation deadlock".
    case allocationStall(AllocationStall)
    /// A call's guarantee overrode a scope's restriction (R2, R5); reported
    /// once per call site.
    case scopeConflict(ScopeConflict)
    /// The OOM handler chose a victim group and called its `onOOMKill`.
    case oomKill(OOMKill)
    /// A victim did not release memory within `oomReapTimeout`; it is
    /// skipped for the next pick.
    case oomVictimStuck(OOMVictimStuck)
    /// An allocation may enter reclaim that needs a lock its thread holds
    /// (or reclaim found such a lock held). Kernel: a lockdep `fs_reclaim` splat.
    case reclaimRecursion(ReclaimRecursion)
    /// Freeing (or using) memory broke the allocator's rules: double free,
    /// foreign, interior, misaligned pointer, wrong order. Kernel: `slab_debug` / `bad_page`.
    case hardeningViolation(HardeningViolation)
    /// A request that can never be valid (negative size, order out of range,
    /// an unbalanced scope token). Kernel: `WARN_ON_ONCE` of the arguments.
    case invalidRequest(InvalidRequest)
    /// A shrinker call did not return within `shrinkerDeadline`: reclaim
    /// went on without it (it finishes on a helper thread). Reported once
    /// per shrinker. Kernel: none (the kernel trusts its shrinkers); the
    /// closest is a hung-task or soft-lockup warning.
    case slowShrinker(SlowShrinker)
    /// The process limit (`MemorySystem.setLimit`) is below usage and
    /// neither reclaim nor the OOM handler can bring usage under it.
    /// Reported once per limit change. Kernel: an OOM report with no
    /// killable task after a `memory.max` write.
    case overLimit(OverLimit)

    /// A one-line description, as events and reports print it.
    public var description: String {
        switch self {
        case .slowShrinker(let e): return e.description
        case .overLimit(let e): return e.description
        case .allocationFailure(let e): return e.description
        case .allocationStall(let e): return e.description
        case .scopeConflict(let e): return e.description
        case .oomKill(let e): return e.description
        case .oomVictimStuck(let e): return e.description
        case .reclaimRecursion(let e): return e.description
        case .hardeningViolation(let e): return e.description
        case .invalidRequest(let e): return e.description
        }
    }
}

/// Payload of `MemoryEvent.allocationFailure`.
public struct AllocationFailure: Sendable, CustomStringConvertible {
    /// The request: `"order 3"` for pages, `"4096 bytes (order 0)"` for byte requests.
    public var request: String
    /// The policy in words (like the kernel's `%pGg`).
    public var policy: String
    /// The scope in force, in words.
    public var scope: String
    /// The reserve tier the request was entitled to.
    public var tier: ReserveTier
    /// Where the request was made, when known.
    public var site: CallSite?
    /// Why it failed, e.g. "non-blocking", "no progress after 16 reclaim rounds", "injected".
    public var reason: String
    /// Earlier reports dropped by the rate limit since the last one.
    public var suppressed: Int
    /// meminfo and buddyinfo when it failed.
    public var snapshot: String
    /// The group the request was charged to, if any.
    public var group: String? = nil

    /// A one-line description, as events and reports print it.
    public var description: String {
        var s = "allocation failure: \(request), policy \(policy), scope \(scope), tier \(tier)"
        if let group { s += ", group \(group)" }
        if let site { s += ", at \(site)" }
        s += ": \(reason)"
        if suppressed > 0 { s += " (\(suppressed) reports suppressed)" }
        return s + "\n" + snapshot
    }
}

/// Payload of `MemoryEvent.allocationStall`.
public struct AllocationStall: Sendable, CustomStringConvertible {
    /// What was asked for, in words (size, order or cache).
    public var request: String
    /// The policy in words (`AllocationPolicy.description`).
    public var policy: String
    /// The scope in force, in words.
    public var scope: String
    /// The request's resolved guarantee, if any.
    public var guarantee: Guarantee?
    /// Where the request was made, when known.
    public var site: CallSite?
    /// Allocation attempts so far.
    public var attempts: Int
    /// Time since the request entered the slow path.
    public var stalledFor: Duration
    /// The group whose `max` the request waits under (R8); nil when it
    /// waits for free memory.
    public var group: String? = nil
    /// That group's usage and limit in words.
    public var groupDetail: String? = nil

    /// A one-line description, as events and reports print it.
    public var description: String {
        let tenths = stalledFor.components.seconds * 10 + stalledFor.components.attoseconds / 100_000_000_000_000_000
        return "possible memory allocation deadlock: \(request), policy \(policy), scope \(scope)"
            + (guarantee.map { ", guarantee \($0)" } ?? "") + (site.map { ", at \($0)" } ?? "")
            + (group.map { ", waiting under the max of group \($0)" + (groupDetail.map { " (\($0))" } ?? "") } ?? "")
            + ", \(attempts) attempts, stalled \(tenths / 10).\(tenths % 10) s"
    }
}

/// Payload of `MemoryEvent.scopeConflict`.
public struct ScopeConflict: Sendable, CustomStringConvertible {
    /// The call, e.g. `allocateGuaranteed(byteCount: 512, .retryForever)`.
    public var call: String
    /// The scope whose restriction was overridden, in words.
    public var scope: String
    /// Which rule decided, and what the call does.
    public var resolution: String
    /// Where the request was made, when known.
    public var site: CallSite?

    /// A one-line description, as events and reports print it.
    public var description: String {
        "scope conflict: \(call) in scope \(scope)\(site.map { " at \($0)" } ?? ""): \(resolution)"
    }
}

/// Payload of `MemoryEvent.hardeningViolation`.
public struct HardeningViolation: Sendable, CustomStringConvertible, Error {
    /// What was wrong.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// The pointer is not inside the arena.
        case foreignPointer = "foreign pointer"
        /// The pointer is not aligned to the size of the block it claims to be.
        case misalignedPointer = "misaligned pointer"
        /// The pointer is inside an allocated block but not at its start.
        case interiorPointer = "interior pointer"
        /// The pointer is free and was allocated before: a double free.
        case doubleFree = "double free"
        /// The pointer was never returned by an allocation.
        case neverAllocated = "never allocated"
        /// The block is allocated with another order (or size) than the one given.
        case wrongOrder = "wrong order"
        /// A slab object freed as pages, or pages freed as an object.
        case wrongAllocator = "wrong allocator"
        /// `ObjectCache.deallocate` of an object of another cache (or of no cache).
        case wrongCache = "wrong cache"
        /// The red zone after an object was overwritten: a buffer overflow.
        case redZoneOverwritten = "red zone overwritten"
        /// A poisoned free object was modified before its next allocation.
        case writeAfterFree = "write after free"
        /// A slab free-list link decodes to no slot of its slab.
        case freeListCorrupted = "free list corrupted"
        /// An object still allocated when its cache was destroyed (reported, never trapped).
        case leakedObject = "leaked object"
    }
    /// What was wrong, to match on.
    public var kind: Kind
    /// The operation, e.g. `freePages(order: 2)`.
    public var operation: String
    /// The offending pointer.
    public var pointer: UInt
    /// What the allocator knows about the memory at that pointer.
    public var detail: String

    /// A one-line description, as events and reports print it.
    public var description: String {
        "hardening violation: \(kind.rawValue): \(operation) of 0x\(String(pointer, radix: 16)): \(detail)"
    }
}

/// Payload of `MemoryEvent.invalidRequest`.
public struct InvalidRequest: Sendable, CustomStringConvertible, Error {
    /// The call, e.g. `allocatePages(order: 11)`.
    public var operation: String
    /// Why it can never succeed.
    public var reason: String
    /// Where it was made, when known.
    public var site: CallSite?

    /// A one-line description, as events and reports print it.
    public var description: String {
        "invalid request: \(operation): \(reason)\(site.map { " (at \($0))" } ?? "")"
    }
}

/// Payload of `MemoryEvent.slowShrinker`.
public struct SlowShrinker: Sendable, CustomStringConvertible {
    /// The shrinker's name.
    public var shrinker: String
    /// The deadline it missed.
    public var deadline: Duration
    /// The request whose reclaim it delayed, if reclaim ran for one.
    public var allocationSite: CallSite?

    /// A one-line description, as events and reports print it.
    public var description: String {
        "shrinker \(shrinker) did not return within \(deadline); reclaim went on without it (it finishes on a helper thread, and is skipped until it does)\(allocationSite.map { "; request at \($0)" } ?? "")"
    }
}

/// Payload of `MemoryEvent.overLimit`.
public struct OverLimit: Sendable, CustomStringConvertible {
    /// The process limit, in bytes.
    public var limit: Int
    /// Bytes in use when reclaim and the OOM handler gave up.
    public var usage: Int

    /// A one-line description, as events and reports print it.
    public var description: String {
        "process limit \(limit >> 10) kB is below usage \(usage >> 10) kB, and reclaim and the OOM handler can free nothing more; requests fail or wait until memory is freed"
    }
}

// SPDX-License-Identifier: Apache-2.0

/// A source location, from the `#fileID`/`#line` defaults of the public entry points.
public struct CallSite: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: UInt

    public init(file: String, line: UInt) {
        self.file = file
        self.line = line
    }

    public init(_ file: StaticString, _ line: UInt) {
        self.file = file.description
        self.line = line
    }

    public var description: String { "\(file):\(line)" }
}

/// Something the memory system reports to its event sinks.
/// Kernel analogue: `warn_alloc`, the stall warning, the OOM report, lockdep
/// splats, `slab_debug` "BUG" reports, `WARN_ON` of bad arguments.
public enum MemoryEvent: Sendable, CustomStringConvertible {
    /// An allocation failed and returned nil. Kernel: "page allocation failure".
    case allocationFailure(AllocationFailure)
    /// Freeing (or using) memory broke the allocator's rules: double free,
    /// foreign, interior, misaligned pointer, wrong order. Kernel: `slab_debug` / `bad_page`.
    case hardeningViolation(HardeningViolation)
    /// A request that can never be valid (negative size, order out of range,
    /// an unbalanced scope token). Kernel: `WARN_ON_ONCE` of the arguments.
    case invalidRequest(InvalidRequest)

    public var description: String {
        switch self {
        case .allocationFailure(let e): return e.description
        case .hardeningViolation(let e): return e.description
        case .invalidRequest(let e): return e.description
        }
    }
}

/// Payload of `MemoryEvent.allocationFailure`.
public struct AllocationFailure: Sendable, CustomStringConvertible {
    /// The request: `"order 3"` for pages, `"4096 bytes"` for byte requests.
    public var request: String
    /// The policy in words.
    public var policy: String
    /// The reserve tier the request was entitled to.
    public var tier: ReserveTier
    /// Where the request was made, when known.
    public var site: CallSite?
    /// Free memory and watermarks when it failed.
    public var snapshot: String

    public var description: String {
        "allocation failure: \(request), policy \(policy), tier \(tier)\(site.map { ", at \($0)" } ?? ""); \(snapshot)"
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
    }
    public var kind: Kind
    /// The operation, e.g. `freePages(order: 2)`.
    public var operation: String
    /// The offending pointer.
    public var pointer: UInt
    /// What the allocator knows about the memory at that pointer.
    public var detail: String

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

    public var description: String {
        "invalid request: \(operation): \(reason)\(site.map { " (at \($0))" } ?? "")"
    }
}

// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Why `MemorySystem.configureShared` refused.
public struct SharedSystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A one-line description, as events and reports print it.
    public var description: String
}

extension MemorySystem {
    /// The process-default system, for libraries that allocate without a
    /// system threaded through every call:
    /// - `MemorySystem.process` when the process allocator (libmmmalloc)
    ///   serves this process's `malloc`;
    /// - else the system `configureShared(_:)` made at start;
    /// - else one made on first use, sized for the container
    ///   (`MemoryConfiguration.sized(for: .current())`: capacity the physical
    ///   memory, limit the cgroup's budget).
    ///
    /// ```swift
    /// // at start, once:
    /// try MemorySystem.configureShared(.init(capacity: 8 << 30))
    /// // anywhere:
    /// let p = MemorySystem.shared.allocate(byteCount: 4096)
    /// ```
    /// Kernel analogue: there is one page allocator per machine; this is the one per process.
    public static var shared: MemorySystem {
        if let process { return process }
        return sharedSystem.withLock { slot in
            if let slot { return slot }
            // Sizing from the container never fails validation; a refusal here means the OS refused the mapping.
            let system: MemorySystem
            do { system = try MemorySystem(.sized(for: .current())) } catch {
                preconditionFailure("swift-mm: the shared MemorySystem could not be created: \(error)")
            }
            slot = system
            return system
        }
    }

    /// Creates the shared system with `configuration`. Call it once, before
    /// the first use of `shared`; throws a `SharedSystemError` when the shared
    /// system exists already (configured, made on first use, or the process
    /// allocator's), and `ConfigurationError`/`SystemError` as `init` does.
    /// - Parameter configuration: the shared system's configuration.
    /// - Returns: the shared system.
    /// - Throws: `SharedSystemError` when it exists already; `ConfigurationError` or `SystemError` as `init` does.
    @discardableResult
    public static func configureShared(_ configuration: MemoryConfiguration) throws -> MemorySystem {
        if process != nil {
            throw SharedSystemError(description: "the process allocator (libmmmalloc) serves this process: MemorySystem.shared is MemorySystem.process")
        }
        return try sharedSystem.withLock { slot in
            if slot != nil {
                throw SharedSystemError(description: "MemorySystem.shared exists already: configureShared must run once, before its first use")
            }
            let system = try MemorySystem(configuration)
            slot = system
            return system
        }
    }
}

/// The shared system once made (`MemorySystem.shared`).
private let sharedSystem = Locked<MemorySystem?>(nil)  // a glibc mutex: ThreadSanitizer sees it

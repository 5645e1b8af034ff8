// SPDX-License-Identifier: Apache-2.0
import Logging
import Synchronization

/// The event sinks of one system. Emitting copies the sink list under a lock
/// and calls the sinks outside it, so a sink may allocate or add sinks.
final class EventHub: Sendable {
    private let sinks = Locked<[@Sendable (MemoryEvent) -> Void]>([])

    func add(_ sink: @escaping @Sendable (MemoryEvent) -> Void) {
        sinks.withLock { $0.append(sink) }
    }

    func emit(_ event: MemoryEvent) {
        let current = sinks.withLock { $0 }
        for sink in current { sink(event) }
    }

    /// The default sink: every event logged through swift-log under the
    /// label `mm` (failures and violations as errors, the rest as warnings).
    static func loggingSink() -> @Sendable (MemoryEvent) -> Void {
        let logger = Logger(label: "mm")
        return { event in
            switch event {
            case .hardeningViolation, .allocationFailure, .oomKill, .reclaimRecursion: logger.error("\(event.description)")
            case .oomVictimStuck, .slowShrinker: logger.warning("\(event.description)")
            case .invalidRequest, .allocationStall, .scopeConflict: logger.warning("\(event.description)")
            }
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
import Logging
import Synchronization

/// The event sinks of one system. Emitting copies the sink list under a lock
/// and calls the sinks outside it, so a sink may allocate or add sinks.
final class EventHub: Sendable {
    private let sinks = Locked<[@Sendable (MemoryEvent) -> Void]>([])

    /// Every live hub, for events that belong to no single system.
    private static let live = Locked<[ObjectIdentifier: Weak]>([:])
    private struct Weak: @unchecked Sendable { weak var hub: EventHub? }  // read and written under `live`'s lock

    init() {
        let weak = Weak(hub: self)
        Self.live.withLock { $0[ObjectIdentifier(self)] = weak }
    }

    deinit {
        let id = ObjectIdentifier(self)
        Self.live.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// Sends an event that belongs to no single system (scope-token misuse,
    /// a lock-order report) to every live system's sinks.
    static func broadcast(_ event: MemoryEvent) {
        let hubs = live.withLock { $0.values.compactMap(\.hub) }
        for hub in hubs { hub.emit(event) }
    }

    func add(_ sink: @escaping @Sendable (MemoryEvent) -> Void) {
        sinks.withLock { $0.append(sink) }
    }

    func emit(_ event: MemoryEvent) {
        let current = sinks.withLock { $0 }
        for sink in current { sink(event) }
    }

    /// The default sink: every event logged through `logger` (swift-log)
    /// at `event.logLevel`, with a short message and the event's fields as
    /// structured metadata (`event.logMetadata`).
    static func loggingSink(_ logger: Logger) -> @Sendable (MemoryEvent) -> Void {
        { event in logger.log(level: event.logLevel, event.logMessage, metadata: event.logMetadata) }
    }
}

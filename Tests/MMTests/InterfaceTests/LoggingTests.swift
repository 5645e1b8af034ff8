// SPDX-License-Identifier: Apache-2.0
import Logging
@testable import MM
import Synchronization
import Testing

/// A log handler that keeps what it is given.
struct CapturingLogHandler: LogHandler {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }
    let records: Locked<[Record]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        records.withLock { $0.append(Record(level: event.level, message: event.message.description, metadata: event.metadata ?? [:])) }
    }
}

@Suite("Logging through an injected swift-log Logger")
struct LoggingTests {
    @Test("events go to the configured logger with a short message and structured metadata")
    func structuredEvents() throws {
        let records = Locked<[CapturingLogHandler.Record]>([])
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.backgroundReclaim = false
        config.logger = Logger(label: "test.mm") { _ in CapturingLogHandler(records: records) }
        let mm = try MemorySystem(config)
        let group = mm.makeGroup(name: "tenant", limits: .init(max: 8192))
        var policy = AllocationPolicy.failFast
        policy.group = group
        #expect(mm.allocate(byteCount: 16384, policy: policy) == nil)
        let failure = try #require(records.withLock { $0 }.first { $0.metadata["event"] == "allocationFailure" })
        #expect(failure.level == .error)
        #expect(failure.message.hasPrefix("allocation failure: group tenant at its max"))
        #expect(failure.metadata["group"] == "tenant")
        #expect(failure.metadata["tier"] == "none")
        #expect(failure.metadata["site"]?.description.hasPrefix("MMTests/LoggingTests.swift:") == true)
        #expect(failure.metadata["policy"] != nil && failure.metadata["scope"] != nil && failure.metadata["request"] != nil)
        _ = mm.allocate(byteCount: -1)
        let invalid = try #require(records.withLock { $0 }.first { $0.metadata["event"] == "invalidRequest" })
        #expect(invalid.level == .warning && invalid.message == "invalid request")
        #expect(invalid.metadata["reason"] != nil)
    }

    @Test("logsEvents = false logs nothing; the event sinks still see everything")
    func off() throws {
        let records = Locked<[CapturingLogHandler.Record]>([])
        var config = MemoryConfiguration(capacity: 16 << 20)
        config.backgroundReclaim = false
        config.logsEvents = false
        config.logger = Logger(label: "test.mm") { _ in CapturingLogHandler(records: records) }
        let mm = try MemorySystem(config)
        let recorder = EventRecorder(mm)
        _ = mm.allocate(byteCount: -1)
        #expect(records.withLock { $0 }.isEmpty)
        #expect(recorder.invalidRequests.count == 1)
    }
}

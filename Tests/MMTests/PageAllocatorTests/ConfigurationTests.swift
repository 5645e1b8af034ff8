// SPDX-License-Identifier: Apache-2.0
@testable import MM
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    @Test("capacity below 4 MiB is refused with the field named")
    func tooSmall() {
        var config = MemoryConfiguration(capacity: (4 << 20) - 1)
        config.logsEvents = false
        #expect {
            _ = try MemorySystem(config)
        } throws: { error in
            (error as? ConfigurationError)?.code == .capacity
        }
    }

    @Test("negative, zero and huge capacities are refused", arguments: [-1, 0, Int.max, 1 << 45])
    func impossibleCapacity(_ capacity: Int) {
        var config = MemoryConfiguration(capacity: capacity)
        config.logsEvents = false
        #expect(throws: ConfigurationError.self) { _ = try MemorySystem(config) }
    }

    @Test("capacity is rounded down to whole 4 MiB blocks")
    func rounding() throws {
        var config = MemoryConfiguration(capacity: (12 << 20) + 12345)
        config.logsEvents = false
        let mm = try MemorySystem(config)
        #expect(mm.configuration.capacity == 12 << 20)
        #expect(mm.statistics().capacity == 12 << 20)
        #expect(mm.statistics().freeBytes == 12 << 20)
    }

    @Test("derived watermarks follow the kernel formula")
    func derived() {
        // 1 GiB: sqrt(1048576 kB * 16) = 4096 kB; gap = max(1024 kB, 0.1 % = 1073741 B)
        let w = Watermarks.derived(capacity: 1 << 30)
        #expect(w.min == 4096 << 10)
        #expect(w.low == (4096 << 10) + 1_073_741)
        #expect(w.high == (4096 << 10) + 2 * 1_073_741)
        // 4 MiB: sqrt(4096 * 16) = 256 kB; gap = 64 kB
        let small = Watermarks.derived(capacity: 4 << 20)
        #expect(small == Watermarks(min: 256 << 10, low: 320 << 10, high: 384 << 10))
        // the lower clamp: 128 kB
        #expect(Watermarks.derived(capacity: 1 << 20).min == 128 << 10)
    }

    @Test("inconsistent watermarks are refused", arguments: [
        Watermarks(min: 0, low: 1 << 20, high: 2 << 20),
        Watermarks(min: 2 << 20, low: 1 << 20, high: 3 << 20),
        Watermarks(min: 1 << 20, low: 2 << 20, high: 2 << 20),
        Watermarks(min: 1 << 20, low: 2 << 20, high: 4 << 20),
        Watermarks(min: 4097, low: 8000, high: 3 << 20),
    ])
    func badWatermarks(_ w: Watermarks) {
        var config = MemoryConfiguration(capacity: 4 << 20)
        config.logsEvents = false
        config.watermarks = w
        #expect {
            _ = try MemorySystem(config)
        } throws: { error in
            (error as? ConfigurationError)?.field == "watermarks"
        }
    }

    @Test("other fields are validated")
    func otherFields() {
        var config = MemoryConfiguration(capacity: 4 << 20)
        config.logsEvents = false
        config.releaseOrder = 11
        #expect(throws: ConfigurationError.self) { _ = try MemorySystem(config) }
        config.releaseOrder = 9
        config.watermarkScaleFactor = 0
        #expect(throws: ConfigurationError.self) { _ = try MemorySystem(config) }
        config.watermarkScaleFactor = 10
        config.releaseDelay = .seconds(-1)
        #expect(throws: ConfigurationError.self) { _ = try MemorySystem(config) }
        config.releaseDelay = .zero
        config.stallReportInterval = .zero
        #expect(throws: ConfigurationError.self) { _ = try MemorySystem(config) }
    }

    @Test("an OS refusal is a SystemError naming the call", arguments: ["mmap", "mmap(metadata)", "mmap(PROT_NONE)"])
    func syscallFailure(_ call: String) {
        var syscalls = Syscalls.live
        let fail = SystemError(call: call, errno: 12)  // ENOMEM
        switch call {
        case "mmap": syscalls.mapPrivate = { _, _ in .failure(fail) }
        case "mmap(metadata)": syscalls.mapAnonymous = { _ in .failure(fail) }
        default: syscalls.reserve = { _ in .failure(fail) }
        }
        var config = MemoryConfiguration(capacity: 4 << 20)
        config.logsEvents = false
        #expect(throws: fail) { _ = try MemorySystem(config, syscalls: syscalls) }
        #expect(fail.description.contains(call))
        #expect(fail.description.contains("Cannot allocate memory"))
    }
}

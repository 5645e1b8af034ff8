// SPDX-License-Identifier: Apache-2.0
import Glibc
@testable import MM
import Synchronization
import Testing

/// A directory laid out like `/sys/fs/cgroup`, removed by `remove()`.
private struct FakeCgroup {
    let root: String

    init() {
        var template = Array("/tmp/mm-cgroup-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        root = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func write(_ relative: String, _ text: String) {
        let path = root + "/" + relative
        var dir = root
        for component in relative.split(separator: "/").dropLast() {
            dir += "/" + component
            _ = mkdir(dir, 0o755)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot write \(path)")
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }

    func remove() { _ = system_rm(root) }
}

private func system_rm(_ path: String) -> Int32 {
    // Small trees only: files one or two levels down.
    guard let dir = opendir(path) else { return unlink(path) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name == "." || name == ".." { continue }
        _ = system_rm(path + "/" + name)
    }
    closedir(dir)
    return rmdir(path)
}

@Suite("The operating system's view: cgroup limits and PSI", .timeLimit(.minutes(1)))
struct ContainerAndPressureTests {
    @Test("cgroup v2: memory.max and memory.high of the process's own cgroup; 'max' means none")
    func cgroupV2() {
        let fake = FakeCgroup()
        defer { fake.remove() }
        fake.write("proc-self-cgroup", "0::/system.slice/app.service\n")
        fake.write("system.slice/app.service/memory.max", "536870912\n")
        fake.write("system.slice/app.service/memory.high", "max\n")
        fake.write("memory.max", "max\n")
        let c = ContainerMemory.read(cgroupRoot: fake.root, procSelfCgroup: fake.root + "/proc-self-cgroup",
                                     physicalMemory: 8 << 30)
        #expect(c.max == 512 << 20 && c.high == nil && c.budget == 512 << 20)
        #expect(c.cgroupDirectory == fake.root + "/system.slice/app.service")
        fake.write("system.slice/app.service/memory.high", "402653184")
        let withHigh = ContainerMemory.read(cgroupRoot: fake.root, procSelfCgroup: fake.root + "/proc-self-cgroup",
                                            physicalMemory: 8 << 30)
        #expect(withHigh.high == 384 << 20 && withHigh.budget == 384 << 20)
        let config = MemoryConfiguration.sized(for: withHigh)
        #expect(config.capacity == 8 << 30 && config.limit == 384 << 20)
    }

    @Test("cgroup v1 memory.limit_in_bytes, unlimited values, garbage, and no cgroup at all")
    func cgroupV1AndOddFiles() {
        let fake = FakeCgroup()
        defer { fake.remove() }
        fake.write("memory/memory.limit_in_bytes", "268435456\n")
        let v1 = ContainerMemory.read(cgroupRoot: fake.root, procSelfCgroup: "/nonexistent", physicalMemory: 4 << 30)
        #expect(v1.max == 256 << 20 && v1.high == nil)
        fake.write("memory/memory.limit_in_bytes", "9223372036854771712\n")    // v1's "unlimited"
        #expect(ContainerMemory.read(cgroupRoot: fake.root, procSelfCgroup: "/nonexistent", physicalMemory: 4 << 30).max == nil)
        fake.write("memory/memory.limit_in_bytes", "lots\n")
        #expect(ContainerMemory.read(cgroupRoot: fake.root, procSelfCgroup: "/nonexistent", physicalMemory: 4 << 30).max == nil)
        let none = ContainerMemory.read(cgroupRoot: "/nonexistent", procSelfCgroup: "/nonexistent", physicalMemory: 4 << 30)
        #expect(none.max == nil && none.cgroupDirectory == nil && none.budget == 4 << 30)
        let unbounded = MemoryConfiguration.sized(for: none)
        #expect(unbounded.limit == nil && unbounded.capacity == 4 << 30)
    }

    @Test("the control law: down one step per event to the floor, up one step per quiet period to the base")
    func controlLaw() {
        let start = ContinuousClock.now
        var c = PressureController(base: 100 << 20, response: .init(floor: 75 << 20, step: 0.10, relaxAfter: .seconds(10)), now: start)
        #expect(c.pressure(now: start) == 90 << 20)
        #expect(c.pressure(now: start + .seconds(1)) == 80 << 20)
        #expect(c.pressure(now: start + .seconds(2)) == 75 << 20)      // the floor
        #expect(c.quiet(now: start + .seconds(5)) == nil)               // not quiet long enough
        #expect(c.quiet(now: start + .seconds(12)) == 85 << 20)         // one step after 10 s of quiet
        #expect(c.quiet(now: start + .seconds(13)) == nil)
        #expect(c.quiet(now: start + .seconds(22)) == 95 << 20)
        #expect(c.quiet(now: start + .seconds(32)) == 100 << 20)        // the base, not above
        #expect(c.quiet(now: start + .seconds(60)) == nil)
    }

    @Test("a simulated pressure event lowers the system's limit within one poll; quiet raises it back; the reaction time is measured")
    func simulatedLoop() throws {
        let mm = try makeBudgetSystem(capacity: 64 << 20)
        let source = SimulatedPressure()
        let monitor = try MemoryPressureMonitor(system: mm, source: .simulated(source),
                                                response: .init(floor: 32 << 20, step: 0.25, relaxAfter: .milliseconds(300)))
        defer { monitor.stop() }
        let clock = ContinuousClock()
        let signalled = clock.now
        source.signal()
        var reacted: Duration?
        while clock.now - signalled < .seconds(5) {
            if mm.limit == 48 << 20 { reacted = clock.now - signalled; break }
            sleep(milliseconds: 1)
        }
        let reaction = try #require(reacted, "the limit did not move within 5 s")
        #expect(reaction < .seconds(1))
        print("pressure monitor reaction time: \(reaction)")
        source.signal()
        var lowered = false
        for _ in 0..<2000 where !lowered { lowered = mm.limit == 32 << 20; if !lowered { sleep(milliseconds: 1) } }
        #expect(lowered)
        #expect(monitor.events == 2)
        // Quiet: back to 64 MiB in two relax steps.
        var restored = false
        for _ in 0..<300 where !restored { restored = mm.limit == 64 << 20; if !restored { sleep(milliseconds: 10) } }
        #expect(restored)
    }

    @Test("against the real /proc/pressure/memory: the trigger registers, the monitor runs and stops")
    func realPSI() throws {
        guard access("/proc/pressure/memory", R_OK) == 0 else {
            print("skipped: this kernel has no /proc/pressure/memory (PSI off or kernel < 4.20)")
            return
        }
        let mm = try makeBudgetSystem(capacity: 64 << 20)
        let monitor: MemoryPressureMonitor
        do {
            monitor = try MemoryPressureMonitor(system: mm, source: .psi(), response: .init(floor: 32 << 20))
        } catch {
            // Registering needs write access to the file (or CAP_SYS_RESOURCE for odd windows).
            print("skipped: \(error)")
            return
        }
        sleep(milliseconds: 250)
        monitor.stop()
        #expect(mm.limit <= 64 << 20)
        let refused = #expect(throws: MemoryPressureMonitor.StartError.self) {
            try MemoryPressureMonitor(system: mm, source: .psi(path: "/proc/pressure/memory",
                                                                trigger: .init(stall: .seconds(3), window: .seconds(2))),
                                      response: .init(floor: 32 << 20))
        }
        #expect(refused?.description.contains("refused the trigger") == true)
        #expect(throws: MemoryPressureMonitor.StartError.self) {
            try MemoryPressureMonitor(system: mm, source: .psi(path: "/nonexistent/memory.pressure"), response: .init(floor: 1 << 20))
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// A PSI trigger: an event when tasks stalled on memory for at least
/// `stall` within any `window`. Kernel analogue: writing
/// `"some 150000 2000000"` to `/proc/pressure/memory` and polling `POLLPRI`.
public struct PressureTrigger: Sendable, Hashable, CustomStringConvertible {
    /// Which stall counts: `some` (at least one task) or `full` (all non-idle tasks).
    public enum Kind: String, Sendable, Hashable { case some, full }
    /// Which stall counts.
    public var kind: Kind
    /// Stall time within a window that raises an event.
    public var stall: Duration
    /// The window: 500 ms…10 s, and a multiple of 2 s for unprivileged
    /// processes (the kernel refuses other windows to them).
    public var window: Duration

    /// A trigger; the default is 150 ms of `some` stall in 2 s, which an
    /// unprivileged process may register.
    public init(kind: Kind = .some, stall: Duration = .milliseconds(150), window: Duration = .seconds(2)) {
        self.kind = kind
        self.stall = stall
        self.window = window
    }

    /// The text written to the pressure file: `some 150000 2000000`.
    public var description: String { "\(kind.rawValue) \(microseconds(stall)) \(microseconds(window))" }

    private func microseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
    }
}

/// Where pressure events come from.
public enum PressureSource: Sendable {
    /// A PSI trigger on a pressure file: `/proc/pressure/memory` (the
    /// machine) or a cgroup's `memory.pressure` (the container).
    case psi(path: String = "/proc/pressure/memory", trigger: PressureTrigger = .init())
    /// Events raised by the program itself (`SimulatedPressure.signal()`),
    /// for tests and for pressure signals from elsewhere (a load balancer, oomd).
    case simulated(SimulatedPressure)
}

/// Pressure events raised by hand. Kernel analogue: none; stands in for a PSI trigger.
public final class SimulatedPressure: Sendable {
    private let lock = ConditionLock()
    private let pending = Atomic<Int>(0)

    /// A source with no pending event.
    public init() {}

    /// Raises one pressure event; the monitor reacts within one poll.
    public func signal() {
        pending.wrappingAdd(1, ordering: .relaxed)
        lock.broadcast()
    }

    /// Waits up to `timeout` for an event; true when one was pending.
    func wait(timeout: Duration) -> Bool {
        lock.wait(timeout: timeout) { pending.load(ordering: .relaxed) == 0 }
        return pending.exchange(0, ordering: .relaxed) > 0
    }
}

/// How the monitor moves the limit: down by `step` of the base budget on
/// each pressure event (never below `floor`), and back up by one step after
/// each `relaxAfter` without an event, up to the base budget. The two speeds
/// are the hysteresis: pressure acts at once, relief slowly.
public struct PressureResponse: Sendable, Hashable {
    /// The lowest limit the monitor sets, in bytes.
    public var floor: Int
    /// The fraction of the base budget one event takes off (0 < step ≤ 1).
    public var step: Double
    /// Quiet time before the limit is raised by one step.
    public var relaxAfter: Duration

    /// A response; the defaults lower by 10 % per event and relax one step per 10 s of quiet.
    public init(floor: Int, step: Double = 0.10, relaxAfter: Duration = .seconds(10)) {
        self.floor = floor
        self.step = step
        self.relaxAfter = relaxAfter
    }
}

/// The monitor's control law, apart from its thread so that it can be
/// driven with a clock of the test's choosing.
struct PressureController: Sendable {
    let base: Int
    let response: PressureResponse
    private(set) var limit: Int
    private var lastChange: ContinuousClock.Instant

    init(base: Int, response: PressureResponse, now: ContinuousClock.Instant) {
        self.base = base
        self.response = response
        self.limit = base
        self.lastChange = now
    }

    private var stepBytes: Int { Swift.max(1 << 20, Int(Double(base) * response.step)) }

    /// A pressure event: the new limit.
    mutating func pressure(now: ContinuousClock.Instant) -> Int {
        limit = Swift.max(Swift.min(response.floor, base), limit - stepBytes)
        lastChange = now
        return limit
    }

    /// No event since the last call: the new limit if it relaxes now, else nil.
    mutating func quiet(now: ContinuousClock.Instant) -> Int? {
        guard limit < base, now - lastChange >= response.relaxAfter else { return nil }
        limit = Swift.min(base, limit + stepBytes)
        lastChange = now
        return limit
    }
}

/// Follows the operating system's memory pressure: on each event it lowers
/// the system's limit (`MemorySystem.setLimit`) so that caches shrink and
/// memory goes back to the OS before the kernel has to reclaim or OOM-kill,
/// and it raises the limit again, slowly, once pressure is gone.
///
/// ```swift
/// let monitor = try MemoryPressureMonitor(system: mm, source: .psi(),
///                                         response: .init(floor: 256 << 20))
/// // … monitor.stop(), or drop it, when done
/// ```
/// Kernel analogue: what systemd-oomd and Meta's Senpai do from user space
/// with PSI triggers and `memory.high`.
public final class MemoryPressureMonitor: Sendable {
    private weak let system: MemorySystem?
    private let controller: Locked<PressureController>
    private let stopping = Atomic<Bool>(false)
    private let finished = ConditionLock()
    private let done = Atomic<Bool>(false)
    private let eventCount = Atomic<Int>(0)
    private let fd: Int32
    private let simulated: SimulatedPressure?

    /// Why a monitor could not start.
    public struct StartError: Error, Sendable, CustomStringConvertible {
        /// What failed, with the path and `errno`'s text.
        public var description: String
    }

    /// Starts a monitor thread for `system`. The base budget is the
    /// system's limit now. Throws when the pressure file cannot be opened or
    /// refuses the trigger (no PSI in the kernel, or a window an
    /// unprivileged process may not use).
    public init(system: MemorySystem, source: PressureSource, response: PressureResponse) throws {
        self.system = system
        controller = Locked(PressureController(base: system.limit, response: response, now: .now))
        switch source {
        case .simulated(let s):
            simulated = s
            fd = -1
        case .psi(let path, let trigger):
            simulated = nil
            let fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else {
                throw StartError(description: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            let text = trigger.description
            let written = text.withCString { write(fd, $0, strlen($0) + 1) }
            guard written > 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw StartError(description: "\(path) refused the trigger \"\(text)\": \(reason)")
            }
            self.fd = fd
        }
        // The thread holds the monitor only during one step: dropping the monitor ends it.
        guard let thread = SystemThread.start({ [weak self] in
            while let monitor = self, monitor.step() {}
        }) else {
            if fd >= 0 { close(fd) }
            throw StartError(description: "the system refused a thread")
        }
        // Nobody joins it: it ends by itself once stopped or dropped.
        pthread_detach(thread)
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Pressure events seen so far.
    public var events: Int { eventCount.load(ordering: .relaxed) }

    /// The limit the monitor last set (the base budget while there has been no pressure).
    public var currentLimit: Int { controller.withLock { $0.limit } }

    /// Stops the thread and waits for it; the limit stays where it is.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        simulated?.signal()
        finished.wait(timeout: .seconds(5)) { !done.load(ordering: .acquiring) }
    }

    private func waitForEvent(timeout: Duration) -> Bool {
        if let simulated { return simulated.wait(timeout: timeout) }
        var p = pollfd(fd: fd, events: Int16(POLLPRI), revents: 0)
        let ms = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        guard poll(&p, 1, ms) > 0 else { return false }
        if p.revents & Int16(POLLERR) != 0 {
            // The pressure file went away (its cgroup was removed): stop.
            stopping.store(true, ordering: .relaxed)
            return false
        }
        return p.revents & Int16(POLLPRI) != 0
    }

    /// One poll and its reaction; false once the monitor stops.
    private func step() -> Bool {
        let event = waitForEvent(timeout: .milliseconds(100))
        guard !stopping.load(ordering: .relaxed), let system else {
            done.store(true, ordering: .releasing)
            finished.broadcast()
            return false
        }
        let now = ContinuousClock.now
        let newLimit: Int? = event
            ? controller.withLock { $0.pressure(now: now) }
            : controller.withLock { $0.quiet(now: now) }
        if event { eventCount.wrappingAdd(1, ordering: .relaxed) }
        if let newLimit, newLimit != system.limit { system.setLimit(newLimit) }
        return true
    }
}

// SPDX-License-Identifier: Apache-2.0
import CoreMetrics
import Glibc
import MM
import Synchronization

/// Exports a system's statistics through swift-metrics, to whatever
/// backend the program bootstrapped (`MetricsSystem.bootstrap`: Prometheus,
/// StatsD, OpenTelemetry…), as server-side Swift expects:
///
/// - every vmstat counter as a `Counter` `mm_vmstat_<name>` (incremented by
///   what it grew since the last export);
/// - meminfo as `Gauge`s in bytes: `mm_memory_capacity_bytes`, `_limit_`,
///   `_free_`, `_per_thread_free_`, `_released_`, `_resident_`,
///   `_metadata_resident_`, `_slab_`, `_slab_reclaimable_`, `_vmalloc_used_`;
/// - pressure as `Gauge`s `mm_pressure_{some,full}_avg{10,60,300}` (percent)
///   and `Counter`s `mm_pressure_{some,full}_stall_microseconds`;
/// - per group (dimension `group`, the group's path `parent/child`): `Gauge`s
///   `mm_group_usage_bytes`, `mm_group_own_usage_bytes` and one per set limit
///   `mm_group_limit_bytes` (dimension `limit`: min, low, high, max), and the
///   `memory.events` counts as a `Counter` `mm_group_events` (dimension
///   `event`: low, high, max, oom, oom_kill).
///
/// `dimensions` are added to every metric (for example the system's name).
///
/// ```swift
/// MetricsSystem.bootstrap(PrometheusMetricsFactory(…))
/// let exporter = MemoryMetricsExporter(system: mm, dimensions: [("system", "cache")])
/// exporter.start(interval: .seconds(10))
/// ```
/// Kernel analogue: none; what node_exporter does with `/proc/vmstat` and cgroup files.
public final class MemoryMetricsExporter: Sendable {
    private let system: MemorySystem
    private let prefix: String
    private let dimensions: [(String, String)]
    private let factory: any MetricsFactory
    private let state = PthreadLocked(State())
    private let running = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)

    private struct State {
        var counters: [String: (metric: Counter, last: Int)] = [:]
        var gauges: [String: Gauge] = [:]
    }

    /// An exporter of `system`'s statistics; `prefix` starts every label.
    public init(system: MemorySystem, prefix: String = "mm", dimensions: [(String, String)] = [],
                factory: any MetricsFactory = MetricsSystem.factory) {
        self.system = system
        self.prefix = prefix
        self.dimensions = dimensions
        self.factory = factory
    }

    /// Exports once now (also what the periodic export calls).
    public func export() {
        let s = system.statistics()
        state.withLock { state in
            for counter in s.counters { count(&state, "\(prefix)_vmstat_\(counter.name)", [], to: counter.value) }
            let meminfo: [(String, Int)] = [
                ("capacity", s.capacity), ("limit", s.limit), ("free", s.freeBytes),
                ("per_thread_free", s.perThreadFreeBytes), ("released", s.releasedBytes),
                ("resident", s.residentBytes), ("metadata_resident", s.metadataResidentBytes),
                ("slab", s.slabBytes), ("slab_reclaimable", s.reclaimableSlabBytes),
                ("vmalloc_used", s.vmallocUsedBytes),
            ]
            for (name, bytes) in meminfo { record(&state, "\(prefix)_memory_\(name)_bytes", [], Double(bytes)) }
            for (kind, line) in [("some", s.pressure.some), ("full", s.pressure.full)] {
                record(&state, "\(prefix)_pressure_\(kind)_avg10", [], line.avg10)
                record(&state, "\(prefix)_pressure_\(kind)_avg60", [], line.avg60)
                record(&state, "\(prefix)_pressure_\(kind)_avg300", [], line.avg300)
                count(&state, "\(prefix)_pressure_\(kind)_stall_microseconds", [], to: line.totalMicroseconds)
            }
            let parents = Dictionary(s.groups.map { ($0.name, $0.parent) }, uniquingKeysWith: { a, _ in a })
            for g in s.groups {
                var path = [g.name], next = g.parent
                while let p = next, path.count < 64 { path.append(p); next = parents[p] ?? nil }
                let group = [("group", path.reversed().joined(separator: "/"))]
                record(&state, "\(prefix)_group_usage_bytes", group, Double(g.usage))
                record(&state, "\(prefix)_group_own_usage_bytes", group, Double(g.ownUsage))
                let limits: [(String, Int?)] = [("min", g.limits.min), ("low", g.limits.low), ("high", g.limits.high), ("max", g.limits.max)]
                for (name, value) in limits {
                    guard let value else { continue }
                    record(&state, "\(prefix)_group_limit_bytes", group + [("limit", name)], Double(value))
                }
                let events = [("low", g.events.low), ("high", g.events.high), ("max", g.events.max),
                              ("oom", g.events.oom), ("oom_kill", g.events.oomKill)]
                for (name, value) in events { count(&state, "\(prefix)_group_events", group + [("event", name)], to: value) }
            }
        }
    }

    /// Starts exporting every `interval` on a task of its own, until `stop()`
    /// (or until the exporter is dropped). Calling it again restarts the period.
    public func start(interval: Duration = .seconds(10)) {
        let mine = generation.wrappingAdd(1, ordering: .relaxed).newValue
        running.store(true, ordering: .relaxed)
        Task.detached { [weak self] in
            while let exporter = self, exporter.running.load(ordering: .relaxed),
                  exporter.generation.load(ordering: .relaxed) == mine {
                exporter.export()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Stops the periodic export (an export in progress finishes).
    public func stop() {
        running.store(false, ordering: .relaxed)
    }

    private func key(_ label: String, _ extra: [(String, String)]) -> String {
        ([label] + extra.map { "\($0.0)=\($0.1)" }).joined(separator: "|")
    }

    /// Brings a cumulative counter to `value` by incrementing it by what it grew.
    private func count(_ state: inout State, _ label: String, _ extra: [(String, String)], to value: Int) {
        let k = key(label, extra)
        if state.counters[k] == nil {
            state.counters[k] = (Counter(label: label, dimensions: dimensions + extra, factory: factory), 0)
        }
        let last = state.counters[k]!.last
        if value > last { state.counters[k]!.metric.increment(by: Int64(value - last)) }
        state.counters[k]!.last = value
    }

    private func record(_ state: inout State, _ label: String, _ extra: [(String, String)], _ value: Double) {
        let k = key(label, extra)
        let gauge = state.gauges[k] ?? Gauge(label: label, dimensions: dimensions + extra, factory: factory)
        state.gauges[k] = gauge
        gauge.record(value)
    }
}

/// A value behind a glibc mutex: ThreadSanitizer sees its ordering (it does
/// not see `Synchronization.Mutex`'s futex hand-over on Linux).
final class PthreadLocked<Value>: @unchecked Sendable {  // `value` only under `mutex`
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

// SPDX-License-Identifier: Apache-2.0
import MetricsTestKit
@testable import MM
import MMMetrics
import Testing

@Suite("swift-metrics export", .timeLimit(.minutes(1)))
struct MetricsExportTests {
    @Test("vmstat counters grow by their deltas, meminfo and group usage are gauges, group events are counters with labels")
    func exportsEverything() throws {
        let mm = try makeBudgetSystem()
        let metrics = TestMetrics()
        let exporter = MemoryMetricsExporter(system: mm, dimensions: [("system", "test")], factory: metrics)
        let parent = mm.makeGroup(name: "svc", limits: .init(low: 4096, max: 16384))
        let child = mm.makeGroup(name: "cache", parent: parent)
        let p = try #require(mm.allocatePages(order: 0))
        exporter.export()
        let pgalloc = try metrics.expectCounter("mm_vmstat_pgalloc", [("system", "test")])
        let first = pgalloc.totalValue
        #expect(first >= 1)
        let q = try #require(mm.allocatePages(order: 2, policy: .nonBlocking))
        _ = mm.allocate(byteCount: 32768, policy: charged(child, .nonBlocking))   // over the parent's max
        exporter.export()
        #expect(pgalloc.totalValue == Int64(mm.statistics()[counter: "pgalloc"]))
        #expect(try metrics.expectGauge("mm_memory_capacity_bytes", [("system", "test")]).lastValue == Double(16 << 20))
        #expect(try metrics.expectGauge("mm_memory_limit_bytes", [("system", "test")]).lastValue == Double(mm.limit))
        let free = try metrics.expectGauge("mm_memory_free_bytes", [("system", "test")])
        #expect(free.lastValue == Double(mm.statistics().freeBytes))
        #expect(try metrics.expectGauge("mm_group_limit_bytes", [("system", "test"), ("group", "svc"), ("limit", "max")]).lastValue == 16384)
        #expect(try metrics.expectGauge("mm_group_usage_bytes", [("system", "test"), ("group", "svc/cache")]).lastValue == 0)
        let maxEvents = try metrics.expectCounter("mm_group_events", [("system", "test"), ("group", "svc"), ("event", "max")])
        #expect(maxEvents.totalValue == 1)
        _ = mm.allocate(byteCount: 32768, policy: charged(child, .nonBlocking))
        exporter.export()
        exporter.export()
        #expect(maxEvents.totalValue == 2)                 // deltas, not re-added
        _ = try metrics.expectCounter("mm_pressure_some_stall_microseconds", [("system", "test")])
        mm.freePages(p, order: 0)
        mm.freePages(q, order: 2)
    }

    @Test("start exports periodically until stop")
    func periodic() async throws {
        let mm = try makeBudgetSystem()
        let metrics = TestMetrics()
        let exporter = MemoryMetricsExporter(system: mm, factory: metrics)
        exporter.start(interval: .milliseconds(20))
        let p = try #require(mm.allocatePages(order: 0))
        var seen = false
        for _ in 0..<200 where !seen {
            try await Task.sleep(for: .milliseconds(10))
            seen = ((try? metrics.expectCounter("mm_vmstat_pgalloc"))?.totalValue ?? 0) >= 1
        }
        exporter.stop()
        #expect(seen)
        mm.freePages(p, order: 0)
    }
}

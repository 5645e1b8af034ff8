// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import MM

/// `mmctl stat`: a fresh system after a short, fixed workload, in /proc formats.
struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print meminfo, buddyinfo and vmstat of a fresh system after a short built-in workload.")

    @Option(name: .customLong("capacity-mib"), help: "Arena capacity in MiB (at least 4).")
    var capacityMiB: Int = 64

    func run() throws {
        try Stat.printWorkloadStatistics(capacityMiB: capacityMiB)
    }

    static func printWorkloadStatistics(capacityMiB: Int) throws {
        var config = MemoryConfiguration(capacity: capacityMiB << 20)
        config.backgroundReclaim = false
        let mm = try MemorySystem(config)
        // The workload: fill about half the arena with a mix of orders,
        // touch every block, then free every other block.
        var held: [(UnsafeMutableRawPointer, Int)] = []
        var used = 0
        var order = 0
        while used < mm.configuration.capacity / 2 {
            guard let p = mm.allocatePages(order: order) else { break }
            for page in 0..<(1 << order) { (p + page * pageSize).storeBytes(of: UInt64(order), as: UInt64.self) }
            held.append((p, order))
            used += pageSize << order
            order = (order + 3) % (maxOrder + 1)
        }
        for (i, (p, order)) in held.enumerated() where i % 2 == 0 { mm.freePages(p, order: order) }
        let s = mm.statistics()
        print("# workload: \(held.count) blocks of orders 0...\(maxOrder) (\(used >> 20) MiB), every other one freed\n")
        print("== meminfo ==")
        print(s.meminfo)
        print("== buddyinfo ==")
        print(s.buddyinfo)
        print("== vmstat ==")
        print(s.vmstat)
        print("== pressure (memory) ==")
        print(s.pressure.rendered)
        for (i, (p, order)) in held.enumerated() where i % 2 == 1 { mm.freePages(p, order: order) }
    }
}

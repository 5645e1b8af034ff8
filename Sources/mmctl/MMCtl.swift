// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import MM

/// `mmctl`: runs, inspects and measures swift-mm.
@main
struct MMCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmctl",
        abstract: "Run, inspect and measure the swift-mm memory manager.",
        subcommands: [Overview.self, Stat.self, Bench.self],
        defaultSubcommand: Overview.self)
}

/// The default command: what swift-mm is, then `stat` on a fresh system.
struct Overview: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overview", abstract: "Explain swift-mm and show a fresh system's statistics.")

    func run() throws {
        print("""
        swift-mm: a memory manager for Swift programs on Linux, modelled on the kernel's
        allocators (buddy pages with watermarks and reserve tiers, per-thread lists,
        vmalloc/kvmalloc, shrinkers, background reclaim, groups and OOM; slab caches
        next) with an allocation interface whose every combination has one defined meaning.

        Commands:
          mmctl stat                 meminfo, buddyinfo and vmstat after a short workload
          mmctl bench [SUITE] --json ratios from one run: pages, scopes, reclaim (build with -c release)

        """)
        try Stat.printWorkloadStatistics(capacityMiB: 64)
    }
}

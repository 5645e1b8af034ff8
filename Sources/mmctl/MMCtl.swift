// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import MM

/// `mmctl`: runs, inspects and measures swift-mm. With no arguments it runs
/// the flagship scenario, `transaction-commit`.
@main
struct MMCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmctl",
        abstract: "Run, inspect and measure the swift-mm memory manager.",
        discussion: """
        With no arguments, runs the flagship scenario (transaction-commit): the kernel's
        __GFP_NOFAIL debate under retryForever, useReserves and a caller retry loop.
        """,
        subcommands: [Run.self, Scenarios.self, Stat.self, Bench.self, DebateCommand.self, MixedWorker.self],
        defaultSubcommand: Run.self)
}

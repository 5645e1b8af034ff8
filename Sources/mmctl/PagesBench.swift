// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import MM
import Synchronization

/// `mmctl bench pages`: the order-0 allocate+free pair against an
/// `mmap`+`munmap` pair of 4 KiB (the OS as page allocator; the page is not
/// touched in either loop), and two threads against one on the pair.
struct PagesBench {
    var scale: Double

    func run() throws -> [BenchResult] {
        let mm = try MemorySystem(PagesBench.quietConfiguration(capacity: 256 << 20))
        let pairs = max(1000, Int(20_000_000 * scale))
        let mmaps = max(100, Int(200_000 * scale))

        let pairNs = bestNanosecondsPerIteration(iterations: pairs) { n in
            for _ in 0..<n {
                let p = mm.allocatePages(order: 0).unsafelyUnwrapped
                mm.freePages(p, order: 0)
            }
        }
        let mmapNs = bestNanosecondsPerIteration(iterations: mmaps) { n in
            for _ in 0..<n {
                let p = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                munmap(p, 4096)
            }
        }
        // Throughput of one thread, then of two at once, same per-thread work.
        let scaling = ThreadScaling.measure(iterationsPerThread: pairs * 4) { throughput(threads: $0, pairsPerThread: pairs, mm) }
        // Creating a system is as lazy as its arena: 16 GiB against 64 MiB.
        let initSmall = bestNanosecondsPerIteration(iterations: 20) { n in
            for _ in 0..<n { _ = try? MemorySystem(Self.quietConfiguration(capacity: 64 << 20)) }
        }
        let initLarge = bestNanosecondsPerIteration(iterations: 20) { n in
            for _ in 0..<n { _ = try? MemorySystem(Self.quietConfiguration(capacity: 16 << 30)) }
        }
        let rssBefore = residentSetBytes()
        let huge = try MemorySystem(Self.quietConfiguration(capacity: 1 << 40))
        let rssHuge = residentSetBytes() - rssBefore
        withExtendedLifetime(huge) {}
        // fork() with 64 MiB of swift-mm memory touched against fork() with 64 MiB of
        // glibc malloc memory touched: both are the kernel's copy-on-write setup only.
        let mallocd = malloc(64 << 20)!
        memset(mallocd, 1, 64 << 20)
        let forkMalloc = forkNanoseconds()
        // Read it back, so that the compiler cannot drop the memset as dead before free.
        var sum = 0
        for offset in stride(from: 0, to: 64 << 20, by: 4096) { sum &+= Int(mallocd.load(fromByteOffset: offset, as: UInt8.self)) }
        precondition(sum == (64 << 20) / 4096)
        free(mallocd)
        var touched: [UnsafeMutableRawPointer] = []
        for _ in 0..<16 {
            let p = mm.allocatePages(order: MemorySystem.maxOrder).unsafelyUnwrapped
            memset(p, 1, 4 << 20)
            touched.append(p)
        }
        let forkHeap = forkNanoseconds()
        for p in touched { mm.freePages(p, order: MemorySystem.maxOrder) }
        return [
            BenchResult(key: "init16g_vs_init64m", value: initLarge / initSmall, goal: "<= 2",
                        detail: String(format: "MemorySystem.init of 16 GiB %.0f µs, of 64 MiB %.0f µs", initLarge / 1000, initSmall / 1000)),
            BenchResult(key: "rss_after_init_1t_mib", value: Double(rssHuge) / Double(1 << 20), goal: "<= 4",
                        detail: "process RSS grown by creating a 1 TiB system, MiB"),
            BenchResult(key: "fork_64m_vs_malloc", value: forkHeap / forkMalloc, goal: "~ 1",
                        detail: String(format: "fork+exit+wait with 64 MiB touched: swift-mm %.0f µs, glibc malloc %.0f µs", forkHeap / 1000, forkMalloc / 1000)),
            BenchResult(key: "order0_pair_vs_mmap", value: pairNs / mmapNs, goal: "<= 0.005",
                        detail: String(format: "order-0 pair %.2f ns, mmap+munmap 4 KiB %.0f ns", pairNs, mmapNs)),
            BenchResult(key: "two_thread_scaling", value: scaling.subject, goal: ">= 1.9",
                        detail: String(format: "order-0 pairs, two threads ÷ one (median of 5 rounds); controls scale %.2f (arithmetic) and %.2f (private memory)", scaling.arithmetic, scaling.memory)),
            BenchResult(key: "two_thread_scaling_vs_control", value: scaling.relative, goal: ">= 0.95",
                        detail: "median over rounds of the scaling above ÷ the private-memory control's, measured in alternation with it"),
        ]
    }

    static func quietConfiguration(capacity: Int) -> MemoryConfiguration {
        var config = MemoryConfiguration(capacity: capacity)
        config.backgroundReclaim = false
        config.logsEvents = false
        return config
    }

    /// Resident set of the process, from /proc/self/statm.
    private func residentSetBytes() -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(getpagesize()) : 0
    }

    /// Best time of fork() + the child's _exit + waitpid, of 20.
    private func forkNanoseconds() -> Double {
        bestNanosecondsPerIteration(iterations: 20) { n in
            for _ in 0..<n {
                let pid = fork()
                if pid == 0 { _exit(0) }
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            }
        }
    }

    /// Pairs per second over all threads; best of three runs.
    private func throughput(threads: Int, pairsPerThread: Int, _ mm: MemorySystem) -> Double {
        var best = 0.0
        for _ in 0..<3 {
            let start = Atomic<Int>(0)
            let clock = ContinuousClock()
            let elapsed = clock.measure {
                runThreads(threads) { _ in
                    // Start together: each thread waits for all to be ready.
                    start.wrappingAdd(1, ordering: .acquiringAndReleasing)
                    while start.load(ordering: .acquiring) < threads {}
                    for _ in 0..<pairsPerThread {
                        let p = mm.allocatePages(order: 0).unsafelyUnwrapped
                        mm.freePages(p, order: 0)
                    }
                }
            }
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            best = max(best, Double(threads * pairsPerThread) / seconds)
        }
        return best
    }
}

/// Runs `body(i)` on `count` POSIX threads and joins them.
func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box: @unchecked Sendable {  // handed to exactly one thread
        let body: @Sendable (Int) -> Void
        let index: Int
        init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) { self.body = body; self.index = index }
    }
    var threads: [pthread_t] = []
    for i in 0..<count {
        var t = pthread_t()
        let box = Unmanaged.passRetained(Box(body, i)).toOpaque()
        pthread_create(&t, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body(box.index)
            return nil
        }, box)
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

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
        var config = MemoryConfiguration(capacity: 256 << 20)
        config.backgroundReclaim = false
        config.logsEvents = false
        let mm = try MemorySystem(config)
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
        let one = throughput(threads: 1, pairsPerThread: pairs, mm)
        let two = throughput(threads: 2, pairsPerThread: pairs, mm)
        return [
            BenchResult(key: "order0_pair_vs_mmap", value: pairNs / mmapNs, goal: "<= 0.005",
                        detail: String(format: "order-0 pair %.2f ns, mmap+munmap 4 KiB %.0f ns", pairNs, mmapNs)),
            BenchResult(key: "two_thread_scaling", value: two / one, goal: ">= 1.9",
                        detail: String(format: "%.1f M pairs/s on one thread, %.1f M on two", one / 1e6, two / 1e6)),
        ]
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

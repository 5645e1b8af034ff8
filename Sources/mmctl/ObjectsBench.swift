// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import MM
import MMLab
import Synchronization

/// The process's `malloc` and `free`, looked up at run time: an optimizer
/// that knows the library calls would delete an unused malloc/free pair.
/// With `LD_PRELOAD` these are the preloaded allocator's.
let systemMalloc = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc"),
                                 to: (@convention(c) (Int) -> UnsafeMutableRawPointer?).self)
let systemFree = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "free"),
                               to: (@convention(c) (UnsafeMutableRawPointer?) -> Void).self)

/// `mmctl bench objects`: the same loops through swift-mm and through the
/// process's `malloc`/`free` (glibc, or whatever `LD_PRELOAD` put in its
/// place), as ratios swift-mm / malloc from one run. Every loop writes one
/// byte of each allocation so that no compiler can elide a pair.
struct ObjectsBench {
    var scale: Double

    func run() throws -> [BenchResult] {
        let mm = try MemorySystem(PagesBench.quietConfiguration(capacity: 512 << 20))
        let pairs = max(1000, Int(10_000_000 * scale))
        var results: [BenchResult] = []

        for (size, key) in [(16, "pair16_vs_malloc"), (256, "pair256_vs_malloc"), (1024, "pair1k_vs_malloc")] {
            let (ours, theirs) = bestNanosecondsPerIteration(iterations: pairs, { n in
                for i in 0..<n {
                    let p = mm.allocate(byteCount: size).unsafelyUnwrapped
                    p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                    mm.deallocate(p)
                }
            }, alternatingWith: { n in
                for i in 0..<n {
                    let p = systemMalloc(size).unsafelyUnwrapped
                    p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                    systemFree(p)
                }
            })
            results.append(BenchResult(key: key, value: ours / theirs, goal: "<= 1.0",
                                       detail: String(format: "%d B pair: swift-mm %.2f ns, malloc %.2f ns", size, ours, theirs)))
        }

        // 1000 allocations of 64 B, then freed first-in first-out.
        let rounds = max(10, Int(10_000 * scale))
        let slots = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1000)
        defer { slots.deallocate() }
        let (oursBatch, theirsBatch) = bestNanosecondsPerIteration(iterations: rounds, { n in
            for _ in 0..<n {
                for i in 0..<1000 {
                    let p = mm.allocate(byteCount: 64).unsafelyUnwrapped
                    p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                    slots[i] = p
                }
                for i in 0..<1000 { mm.deallocate(slots[i].unsafelyUnwrapped) }
            }
        }, alternatingWith: { n in
            for _ in 0..<n {
                for i in 0..<1000 {
                    let p = systemMalloc(64).unsafelyUnwrapped
                    p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                    slots[i] = p
                }
                for i in 0..<1000 { systemFree(slots[i]) }
            }
        })
        results.append(BenchResult(key: "batch1000_vs_malloc", value: oursBatch / theirsBatch, goal: "<= 1.0",
                                   detail: String(format: "1000 × 64 B then FIFO frees: swift-mm %.0f ns, malloc %.0f ns per round",
                                                  oursBatch, theirsBatch)))

        // 1 MiB, every page touched: pages stay resident in the arena; malloc maps and faults.
        var automatic = AllocationPolicy.standard
        automatic.placement = .automatic
        let big = max(100, Int(20_000 * scale))
        let oursBig = bestNanosecondsPerIteration(iterations: big) { n in
            for _ in 0..<n {
                let p = mm.allocate(byteCount: 1 << 20, policy: automatic).unsafelyUnwrapped
                for page in stride(from: 0, to: 1 << 20, by: 4096) { p.storeBytes(of: 1, toByteOffset: page, as: UInt8.self) }
                mm.deallocate(p)
            }
        }
        let theirsBig = bestNanosecondsPerIteration(iterations: big) { n in
            for _ in 0..<n {
                let p = systemMalloc(1 << 20).unsafelyUnwrapped
                for page in stride(from: 0, to: 1 << 20, by: 4096) { p.storeBytes(of: 1, toByteOffset: page, as: UInt8.self) }
                free(p)
            }
        }
        results.append(BenchResult(key: "automatic1m_vs_malloc", value: oursBig / theirsBig, goal: "<= 0.1",
                                   detail: String(format: "1 MiB + touch 256 pages: swift-mm %.0f ns, malloc %.0f ns", oursBig, theirsBig)))

        // Producer/consumer: objects allocated on one thread, freed on another.
        let handoffs = max(10_000, Int(5_000_000 * scale))
        let oursRemote = remoteThroughput(count: handoffs,
                                          allocate: { mm.allocate(byteCount: 64).unsafelyUnwrapped },
                                          free: { mm.deallocate($0) })
        let theirsRemote = remoteThroughput(count: handoffs, allocate: { systemMalloc(64).unsafelyUnwrapped }, free: { systemFree($0) })
        results.append(BenchResult(key: "remote_free_vs_malloc", value: oursRemote / theirsRemote, goal: ">= 1.0",
                                   detail: String(format: "64 B in batches of 1000 freed by another thread: swift-mm %.1f M/s, malloc %.1f M/s",
                                                  oursRemote / 1e6, theirsRemote / 1e6)))

        // The mixed workload: two threads, sizes and frees from a fixed seed. Each
        // allocator runs in a process of its own (one after the other, best of three
        // for time), so that its peak RSS is its own.
        let mixedOps = max(20_000, Int(10_000_000 * scale))
        var ours = (seconds: Double.infinity, peakRSS: Int.max), theirs = ours
        for _ in 0..<3 {
            let a = try MixedWorker.measure(.swiftmm, operations: mixedOps)
            let b = try MixedWorker.measure(.malloc, operations: mixedOps)
            ours = (min(ours.seconds, a.seconds), min(ours.peakRSS, a.peakRSS))
            theirs = (min(theirs.seconds, b.seconds), min(theirs.peakRSS, b.peakRSS))
        }
        results.append(BenchResult(key: "mixed_vs_malloc", value: ours.seconds / theirs.seconds, goal: "<= 1.0",
                                   detail: String(format: "%d ops on 2 threads (%@): swift-mm %.0f ms, malloc %.0f ms",
                                                  2 * mixedOps, MixedWorkload.summary, ours.seconds * 1000, theirs.seconds * 1000)))
        results.append(BenchResult(key: "mixed_peak_rss_vs_malloc", value: Double(ours.peakRSS) / Double(theirs.peakRSS),
                                   goal: "<= 1.0",
                                   detail: String(format: "peak RSS of a process running the mixed workload: swift-mm %.1f MiB, malloc %.1f MiB",
                                                  Double(ours.peakRSS) / 1048576, Double(theirs.peakRSS) / 1048576)))

        let scaling = ThreadScaling.measure(iterationsPerThread: pairs * 4) { pairThroughput(threads: $0, pairsPerThread: pairs, mm) }
        results.append(BenchResult(key: "two_thread_scaling", value: scaling.subject, goal: ">= 1.9",
                                   detail: String(format: "64 B pairs, two threads ÷ one (median of 5 rounds); controls scale %.2f (arithmetic) and %.2f (private memory)", scaling.arithmetic, scaling.memory)))
        results.append(BenchResult(key: "two_thread_scaling_vs_control", value: scaling.relative, goal: ">= 0.95",
                                   detail: "median over rounds of the scaling above ÷ the private-memory control's, measured in alternation with it"))
        return results
    }

    /// Objects per second when one thread allocates batches of 1000 and
    /// another frees each batch while the next is being allocated (two
    /// buffers, handed over with a blocking condition, not a spin): the
    /// allocator's remote-free path, with one hand-over per 1000 objects.
    /// Best of three.
    private func remoteThroughput(count: Int, allocate: @escaping @Sendable () -> UnsafeMutableRawPointer,
                                  free: @escaping @Sendable (UnsafeMutableRawPointer) -> Void) -> Double {
        let batch = 1000
        let batches = max(4, count / batch)
        var best = 0.0
        for _ in 0..<3 {
            let exchange = BatchExchange(batch: batch)
            let elapsed = ContinuousClock().measure {
                runThreads(2) { t in
                    if t == 0 {
                        for b in 0..<batches {
                            let buffer = exchange.emptyBuffer()
                            for i in 0..<batch {
                                let p = allocate()
                                p.storeBytes(of: UInt8(truncatingIfNeeded: i &+ b), as: UInt8.self)
                                buffer[i] = p
                            }
                            exchange.handOver(buffer)
                        }
                        exchange.finish()
                    } else {
                        while let buffer = exchange.nextFull() {
                            for i in 0..<batch { free(buffer[i]) }
                            exchange.giveBack(buffer)
                        }
                    }
                }
            }
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            best = max(best, Double(batches * batch) / seconds)
        }
        return best
    }

    /// 64-byte pairs per second over all threads; best of three.
    private func pairThroughput(threads: Int, pairsPerThread: Int, _ mm: MemorySystem) -> Double {
        var best = 0.0
        for _ in 0..<3 {
            let start = Atomic<Int>(0)
            let elapsed = ContinuousClock().measure {
                runThreads(threads) { _ in
                    start.wrappingAdd(1, ordering: .acquiringAndReleasing)
                    while start.load(ordering: .acquiring) < threads {}
                    for i in 0..<pairsPerThread {
                        let p = mm.allocate(byteCount: 64).unsafelyUnwrapped
                        p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                        mm.deallocate(p)
                    }
                }
            }
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            best = max(best, Double(threads * pairsPerThread) / seconds)
        }
        return best
    }
}

/// Two buffers of pointers passed between a producer and a consumer thread
/// with a POSIX mutex and condition (sleeping, not spinning, while the other
/// side works).
final class BatchExchange: @unchecked Sendable {  // buffers and queues are guarded by `mutex`
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var empty: [UnsafeMutablePointer<UnsafeMutableRawPointer>]
    private var full: [UnsafeMutablePointer<UnsafeMutableRawPointer>] = []
    private var done = false
    private let all: [UnsafeMutablePointer<UnsafeMutableRawPointer>]

    init(batch: Int) {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        all = (0..<2).map { _ in UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: batch) }
        empty = all
    }

    deinit {
        for b in all { b.deallocate() }
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    func emptyBuffer() -> UnsafeMutablePointer<UnsafeMutableRawPointer> {
        locked {
            while empty.isEmpty { pthread_cond_wait(condition, mutex) }
            return empty.removeLast()
        }
    }

    func handOver(_ buffer: UnsafeMutablePointer<UnsafeMutableRawPointer>) {
        locked { full.append(buffer); pthread_cond_broadcast(condition) }
    }

    func finish() { locked { done = true; pthread_cond_broadcast(condition) } }

    func nextFull() -> UnsafeMutablePointer<UnsafeMutableRawPointer>? {
        locked {
            while full.isEmpty && !done { pthread_cond_wait(condition, mutex) }
            return full.isEmpty ? nil : full.removeFirst()
        }
    }

    func giveBack(_ buffer: UnsafeMutablePointer<UnsafeMutableRawPointer>) {
        locked { empty.append(buffer); pthread_cond_broadcast(condition) }
    }
}

/// What the mixed workload allocates with: swift-mm or the process's
/// `malloc`, called directly (the workload is generic over it, so neither
/// pays for a closure call or reference counting per operation).
protocol MixedWorkloadAllocator: Sendable {
    func allocate(_ size: Int) -> UnsafeMutableRawPointer
    func free(_ pointer: UnsafeMutableRawPointer)
}

/// A realistic mix, the same for every allocator: two threads, each doing
/// `operations` steps from its own fixed seed (1 and 2). A step allocates
/// (writing the first and last byte) when fewer than 4096 objects are live
/// or on a coin flip, and otherwise frees a random live object. Sizes follow
/// a Pareto distribution (α = 1.2, from 16 B, capped at 64 KiB: most are
/// small, a few large); one allocation in 2000 is 1 MiB instead. Each thread
/// draws its sizes before the clock starts (a ring of 65536, from its seed):
/// the power function that shapes them would otherwise take a third of the
/// time, the same for every allocator, and flatten every ratio.
enum MixedWorkload {
    static let summary = "Pareto 16 B–64 KiB α 1.2, 1 MiB at p = 1/2000, ≤ 8192 live per thread, random frees, seeds 1 and 2"

    /// Sizes drawn per thread before timing; the steps cycle through them.
    static let sizeRing = 1 << 16

    /// A thread frees on a coin flip once it holds half this many objects, and always at this many.
    static let maximumLive = 8192

    /// Wall-clock seconds for both threads to finish, best of `runs`.
    static func seconds<A: MixedWorkloadAllocator>(operations: Int, runs: Int = 3, _ allocator: A) -> Double {
        let sizes: [[Int]] = (0..<2).map { t in
            var rng = SeededGenerator(seed: UInt64(t + 1) &* 0x9E37_79B9)
            return (0..<sizeRing).map { _ in rng.next() % 2000 == 7 ? 1 << 20 : paretoSize(rng.next()) }
        }
        var best = Double.infinity
        for _ in 0..<runs {
            let elapsed = ContinuousClock().measure {
                runThreads(2) { t in
                    var rng = SeededGenerator(seed: UInt64(t + 1))
                    // The live objects in a plain buffer: the bookkeeping compiles to the same
                    // few instructions whatever the allocator (an Array's uniqueness checks
                    // depend on how the optimiser sees the allocator's calls, and did not).
                    let live = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: maximumLive)
                    defer { live.deallocate() }
                    var count = 0
                    sizes[t].withUnsafeBufferPointer { sizes in
                        var next = 0
                        for _ in 0..<operations {
                            let r = rng.next()
                            if count < maximumLive / 2 || (count < maximumLive && r & 1 == 0) {
                                let size = sizes[next]
                                next = (next &+ 1) & (sizeRing - 1)
                                let p = allocator.allocate(size)
                                p.storeBytes(of: 1, as: UInt8.self)
                                p.storeBytes(of: 2, toByteOffset: size &- 1, as: UInt8.self)
                                live[count] = p
                                count &+= 1
                            } else {
                                let i = Int(truncatingIfNeeded: (r &>> 1) % UInt64(truncatingIfNeeded: count))
                                allocator.free(live[i])
                                count &-= 1
                                live[i] = live[count]
                            }
                        }
                    }
                    for i in 0..<count { allocator.free(live[i]) }
                }
            }
            best = min(best, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
        return best
    }

    /// 16 / U^(1/1.2), capped at 64 KiB, from 64 random bits.
    static func paretoSize(_ bits: UInt64) -> Int {
        let u = max(1e-12, Double(bits >> 11) / Double(1 << 53))
        return min(64 << 10, Int(16 / pow(u, 1 / 1.2)))
    }
}

// SPDX-License-Identifier: Apache-2.0
import Glibc
@_spi(Benchmarks) import MM

/// `mmctl bench kvmalloc`: Dave Chinner's "kvmalloc is most certainly
/// becoming one of the hottest paths" and Michal Hocko's "is it such a hot
/// path that a check for compatible flags would be visible in profiles?"
/// (claim 7 of the debate). For 4 KiB … 1 MiB `.automatic` requests: the
/// time of an allocate + free pair against glibc's malloc + free of the same
/// size, and what resolving the request's context (the scope read and the
/// rules R1–R7: swift-mm's "flag check") costs, as a share of the pair.
struct KvmallocBench {
    var scale: Double

    func run() throws -> [BenchResult] {
        let mm = try MemorySystem(PagesBench.quietConfiguration(capacity: 512 << 20))
        let iterations = max(2_000, Int(200_000 * scale))
        var results: [BenchResult] = []
        // glibc through the pointers looked up at run time (`systemMalloc`, `systemFree`):
        // the optimiser deletes a visible malloc/free pair.
        // The context resolution alone, inside a scope as a filesystem transaction has.
        let resolve = withThreadAllocationScope(.excluding(.filesystem)) {
            bestNanosecondsPerIteration(iterations: iterations * 5) { n in
                for _ in 0..<n { blackHole(AllocationContext._resolveForBenchmark(policy: .standard)) }
            }
        }
        for (name, bytes) in [("4k", 4 << 10), ("64k", 64 << 10), ("256k", 256 << 10), ("1m", 1 << 20)] {
            let n = bytes >= 256 << 10 ? max(500, iterations / 10) : iterations
            let ours = withThreadAllocationScope(.excluding(.filesystem)) {
                bestNanosecondsPerIteration(iterations: n) { n in
                    for _ in 0..<n { mm.deallocate(mm.allocate(byteCount: bytes).unsafelyUnwrapped) }
                }
            }
            let glibc = bestNanosecondsPerIteration(iterations: n) { n in
                for _ in 0..<n {
                    let p = systemMalloc(bytes)!
                    p.storeBytes(of: 1, as: UInt8.self)
                    systemFree(p)
                }
            }
            results.append(BenchResult(key: "kvmalloc_\(name)_vs_malloc", value: ours / glibc, goal: "in words",
                                       detail: "\(String(format: "%.0f", ours)) ns vs malloc \(String(format: "%.0f", glibc)) ns per pair, in an excluding(filesystem) scope"))
            // A 4 KiB request is a magazine hit: it resolves nothing.
            guard bytes > 4 << 10 else { continue }
            results.append(BenchResult(key: "kvmalloc_\(name)_resolve_share", value: resolve / ours, goal: "in words",
                                       detail: "context resolution \(String(format: "%.1f", resolve)) ns of a \(String(format: "%.0f", ours)) ns pair"))
        }
        return results
    }
}

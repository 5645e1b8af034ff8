// SPDX-License-Identifier: Apache-2.0
import Foundation
import MM

/// `mmctl bench scopes`: what scopes cost. The allocation fast path must not
/// read them (`nested5_vs_none`); entering and leaving them must be cheap.
struct ScopesBench {
    var scale: Double

    func run() throws -> [BenchResult] {
        let mm = try MemorySystem(PagesBench.quietConfiguration(capacity: 64 << 20))
        let pairs = max(1000, Int(10_000_000 * scale))
        let scopes = max(1000, Int(5_000_000 * scale))

        @inline(never) func pairLoop(_ n: Int) {
            for _ in 0..<n {
                let p = mm.allocate(byteCount: 4096).unsafelyUnwrapped
                mm.deallocate(p)
            }
        }
        // Interleave the two measurements so drift affects both alike.
        var none = Double.infinity, nested = Double.infinity
        for _ in 0..<5 {
            none = min(none, bestNanosecondsPerIteration(iterations: pairs, repetitions: 1, pairLoop))
            nested = min(nested, withAllocationScope(.excluding(.filesystem)) {
                withAllocationScope(.noDirectReclaim) {
                    withAllocationScope(.retryForever) {
                        withAllocationScope(.quiet) {
                            withAllocationScope(.excluding(.io)) {
                                bestNanosecondsPerIteration(iterations: pairs, repetitions: 1, pairLoop)
                            }
                        }
                    }
                }
            })
        }
        let outermost = bestNanosecondsPerIteration(iterations: scopes) { n in
            for _ in 0..<n { withAllocationScope(.excluding(.filesystem)) { blackHole(0) } }
        }
        let inner = withAllocationScope(.noDirectReclaim) {
            bestNanosecondsPerIteration(iterations: scopes) { n in
                for _ in 0..<n { withAllocationScope(.excluding(.filesystem)) { blackHole(0) } }
            }
        }
        // The scope that follows only its thread: no TaskLocal at all.
        let threadOnly = bestNanosecondsPerIteration(iterations: scopes) { n in
            for _ in 0..<n { withThreadAllocationScope(.excluding(.filesystem)) { blackHole(0) } }
        }
        // What bounds a closure scope: the runtime's TaskLocal push+pop (and a
        // read for the outermost one), measured on a TaskLocal of our own.
        let taskLocalBind = bestNanosecondsPerIteration(iterations: scopes) { n in
            for i in 0..<n { BenchTaskLocal.$value.withValue(i) { blackHole(0) } }
        }
        let taskLocalRead = bestNanosecondsPerIteration(iterations: scopes) { n in
            for _ in 0..<n { blackHole(BenchTaskLocal.value) }
        }
        let token = bestNanosecondsPerIteration(iterations: scopes * 4) { n in
            for _ in 0..<n {
                let t = AllocationScope.enter(.excluding(.filesystem))
                t.exit()
            }
        }
        return [
            BenchResult(key: "nested5_vs_none", value: nested / none, goal: "<= 1.02",
                        detail: String(format: "4 KiB allocate+deallocate %.2f ns in 5 nested scopes, %.2f ns in none", nested, none)),
            BenchResult(key: "closure_scope_thread_ns", value: threadOnly, goal: "<= 40",
                        detail: "withThreadAllocationScope: the thread's own stack, no TaskLocal"),
            BenchResult(key: "closure_scope_ns", value: outermost, goal: "-",
                        detail: String(format: "withAllocationScope, outermost (TaskLocal bound so that tasks inherit it, and read); %.1f ns nested in another", inner)),
            BenchResult(key: "closure_scope_nested_ns", value: inner, goal: "-",
                        detail: "withAllocationScope inside another one (bound, no TaskLocal read)"),
            BenchResult(key: "tasklocal_bind_ns", value: taskLocalBind, goal: "-",
                        detail: String(format: "bare TaskLocal withValue push+pop (the floor of a closure scope); a read costs %.1f ns", taskLocalRead)),
            BenchResult(key: "token_scope_ns", value: token, goal: "<= 5",
                        detail: "AllocationScope.enter + exit"),
        ]
    }
}

/// Keeps a value alive for the optimizer.
@inline(never) func blackHole<T>(_ value: T) {}

enum BenchTaskLocal {
    @TaskLocal static var value = 0
}

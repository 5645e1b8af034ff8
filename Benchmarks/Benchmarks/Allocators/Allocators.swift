// SPDX-License-Identifier: Apache-2.0
//
// swift-mm against the process's allocator, with ordo-one/benchmark.
// Run from this folder: `swift package --disable-sandbox benchmark`.
//
// Every comparison runs both sides inside the same sample — first swift-mm,
// then the system allocator, the same loop of the same sizes — and records
// three custom metrics: picoseconds per operation for each side and their
// ratio ×1000 (below 1000: swift-mm is faster). Ratios from one run are the
// figures to quote; absolute times on a shared machine are not. The
// "system mallocs" benchmarks show, through the malloc interposer, that the
// swift-mm hot paths call the system allocator zero times.
import Benchmark
import Glibc
import MM

/// One arena for every benchmark: 512 MiB, no background thread.
let memory: MemorySystem = {
    var configuration = MemoryConfiguration(capacity: 512 << 20)
    configuration.backgroundReclaim = false
    configuration.logsEvents = false
    return try! MemorySystem(configuration)
}()

/// The allocator the benchmark compares with: the first library named in
/// LD_PRELOAD (jemalloc, tcmalloc, mimalloc...), else glibc — looked up in
/// that library, so that the benchmark harness's own malloc interposer (a
/// library loaded before libc) is neither measured nor bypassed by the
/// preload. Called through pointers, so the compiler cannot delete a pair.
nonisolated(unsafe) let systemAllocator: UnsafeMutableRawPointer = {
    let preload = getenv("LD_PRELOAD").map { String(cString: $0) }?
        .split(whereSeparator: { $0 == ":" || $0 == " " }).first.map(String.init)
    if let preload, let handle = dlopen(preload, RTLD_NOW | RTLD_NOLOAD) { return handle }
    guard let libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD) else { fatalError("libc.so.6 is not loaded") }
    return libc
}()
let systemMalloc = unsafeBitCast(dlsym(systemAllocator, "malloc"),
                                 to: (@convention(c) (Int) -> UnsafeMutableRawPointer?).self)
let systemFree = unsafeBitCast(dlsym(systemAllocator, "free"),
                               to: (@convention(c) (UnsafeMutableRawPointer?) -> Void).self)

let ours = BenchmarkMetric.custom("swift-mm (ps/op)", useScalingFactor: false)
let theirs = BenchmarkMetric.custom("system allocator (ps/op)", useScalingFactor: false)
let ratio = BenchmarkMetric.custom("ratio x1000 (swift-mm / system)", useScalingFactor: false)

/// Times `body(n)` once and returns picoseconds per operation.
@inline(never)
func picoseconds(_ operations: Int, _ body: (Int) -> Void) -> Int {
    let elapsed = ContinuousClock().measure { body(operations) }
    let ps = Double(elapsed.components.seconds) * 1e12 + Double(elapsed.components.attoseconds) / 1e6
    return Int(ps / Double(operations))
}

/// A benchmark that runs `swiftMM` and `system` on `operations` each per
/// sample and records both costs and their ratio.
func compare(_ name: String, operations: Int,
             swiftMM: @escaping (Int) -> Void, system: @escaping (Int) -> Void) {
    Benchmark(name, configuration: .init(metrics: [ours, theirs, ratio], warmupIterations: 3,
                                         maxDuration: .seconds(2), maxIterations: 50)) { benchmark in
        let a = picoseconds(operations, swiftMM)
        let b = picoseconds(operations, system)
        benchmark.measurement(ours, a)
        benchmark.measurement(theirs, b)
        benchmark.measurement(ratio, b > 0 ? a * 1000 / b : 0)
    }
}

let benchmarks: @Sendable () -> Void = {
    for size in [16, 256, 1024] {
        compare("objects: allocate+free pair, \(size) B", operations: 100_000, swiftMM: { n in
            for i in 0..<n {
                let p = memory.allocate(byteCount: size).unsafelyUnwrapped
                p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                blackHole(p)
                memory.deallocate(p)
            }
        }, system: { n in
            for i in 0..<n {
                let p = systemMalloc(size).unsafelyUnwrapped
                p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                blackHole(p)
                systemFree(p)
            }
        })
    }

    let slots = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: 1000)
    compare("objects: 1000 x 64 B, then FIFO frees", operations: 100, swiftMM: { rounds in
        for _ in 0..<rounds {
            for i in 0..<1000 { slots[i] = memory.allocate(byteCount: 64).unsafelyUnwrapped }
            for i in 0..<1000 { memory.deallocate(slots[i]) }
        }
    }, system: { rounds in
        for _ in 0..<rounds {
            for i in 0..<1000 { slots[i] = systemMalloc(64).unsafelyUnwrapped }
            for i in 0..<1000 { systemFree(slots[i]) }
        }
    })

    compare("kvmalloc: 1 MiB .automatic, touch every page, free", operations: 200, swiftMM: { n in
        var policy = AllocationPolicy.standard
        policy.placement = .automatic
        for _ in 0..<n {
            let p = memory.allocate(byteCount: 1 << 20, policy: policy).unsafelyUnwrapped
            for page in stride(from: 0, to: 1 << 20, by: 4096) { p.storeBytes(of: 1, toByteOffset: page, as: UInt8.self) }
            memory.deallocate(p)
        }
    }, system: { n in
        for _ in 0..<n {
            let p = systemMalloc(1 << 20).unsafelyUnwrapped
            for page in stride(from: 0, to: 1 << 20, by: 4096) { p.storeBytes(of: 1, toByteOffset: page, as: UInt8.self) }
            systemFree(p)
        }
    })

    compare("pages: order-0 page pair (system: mmap+munmap of 4 KiB)", operations: 20_000, swiftMM: { n in
        for _ in 0..<n {
            let p = memory.allocatePages(order: 0).unsafelyUnwrapped
            p.storeBytes(of: 1, as: UInt8.self)
            memory.freePages(p, order: 0)
        }
    }, system: { n in
        for _ in 0..<n {
            let p = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0).unsafelyUnwrapped
            p.storeBytes(of: 1, as: UInt8.self)
            munmap(p, 4096)
        }
    })

    Benchmark("system mallocs: swift-mm 64 B pairs",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo,
                                   maxDuration: .seconds(1))) { benchmark in
        for _ in benchmark.scaledIterations {
            let p = memory.allocate(byteCount: 64).unsafelyUnwrapped
            blackHole(p)
            memory.deallocate(p)
        }
    }

    Benchmark("system mallocs: scope token enter+exit of .excluding(.filesystem)",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo,
                                   maxDuration: .seconds(1))) { benchmark in
        for _ in benchmark.scaledIterations {
            let token = AllocationScope.enter(.excluding(.filesystem))
            token.exit()
        }
    }
}

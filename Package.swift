// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-mm",
    // Linux is the target; the Apple minimum is what Synchronization (Atomic) needs.
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "MM", targets: ["MM"]),
        .executable(name: "mmctl", targets: ["mmctl"]),
        // The process allocator: `LD_PRELOAD=…/libmmmalloc.so program`, or a dependency
        // that a Swift executable links so its whole process allocates from swift-mm.
        .library(name: "mmmalloc", type: .dynamic, targets: ["MMMalloc"]),
        // swift-metrics export of a system's statistics (its own product: the core has no metrics dependency).
        .library(name: "MMMetrics", targets: ["MMMetrics"]),
        // SwiftNIO ByteBuffers allocated from swift-mm (its own product: the core has no NIO dependency).
        .library(name: "MMNIO", targets: ["MMNIO"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.96.0"),
    ],
    targets: [
        // Only what Glibc hides: memfd_create, fallocate, _Thread_local slots, gettid.
        .target(
            name: "CMMShims",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        .target(
            name: "MM",
            dependencies: [
                "CMMShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The C allocation symbols of libmmmalloc.so, forwarding to MMMalloc.
        .target(
            name: "CMMMalloc",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        // The process allocator's Swift entry points and configuration.
        .target(
            name: "MMMalloc",
            dependencies: ["MM", "CMMShims", "CMMMalloc"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // vmstat counters, meminfo gauges and group events through swift-metrics.
        .target(
            name: "MMMetrics",
            dependencies: ["MM", .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // ByteBufferAllocator over MemorySystem.shared.
        .target(
            name: "MMNIO",
            dependencies: ["MM", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The example HTTP server: a response cache as a shrinker, NIO buffers on swift-mm.
        .target(
            name: "NIOCacheServer",
            dependencies: [
                "MM", "MMNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            path: "Examples/NIOCacheServer/Sources/NIOCacheServer",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "nio-cache-server",
            dependencies: ["NIOCacheServer", "MM"],
            path: "Examples/NIOCacheServer/Sources/nio-cache-server",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The scenario lab: YAML scenarios, the runner, reports and timelines.
        .target(
            name: "MMLab",
            dependencies: [
                "MM",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mmctl",
            dependencies: [
                "MM",
                "MMLab",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "MMTests",
            dependencies: ["MM", "MMLab", "CMMShims", "MMMetrics",
                           .product(name: "MetricsTestKit", package: "swift-metrics"),
                           .product(name: "Logging", package: "swift-log"),
                           "MMNIO", "NIOCacheServer", .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

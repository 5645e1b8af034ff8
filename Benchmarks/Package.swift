// swift-tools-version: 6.1
// SPDX-License-Identifier: Apache-2.0
//
// swift-mm's benchmarks with ordo-one/benchmark: `swift package benchmark`
// in this folder. Kept in a package of its own so that the library does not
// depend on the benchmark harness.
import PackageDescription

let package = Package(
    name: "swift-mm-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-mm", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "Allocators",
            dependencies: [
                .product(name: "MM", package: "swift-mm"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/Allocators",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)

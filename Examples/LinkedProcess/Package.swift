// swift-tools-version: 6.1
// SPDX-License-Identifier: Apache-2.0
//
// A Swift executable whose whole process allocates from swift-mm: it links
// the `mmmalloc` product (libmmmalloc.so), which defines malloc and free, and
// reaches the system behind them as `MemorySystem.process`.
import PackageDescription

let package = Package(
    name: "linked-process",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-mm", path: "../..")],
    targets: [
        .executableTarget(
            name: "LinkedProcess",
            dependencies: [.product(name: "mmmalloc", package: "swift-mm")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

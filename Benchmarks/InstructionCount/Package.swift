// swift-tools-version: 6.1
// SPDX-License-Identifier: Apache-2.0
//
// A client of swift-mm, kept outside the library so that what is measured is
// what a user's module gets: `@inlinable` fast paths inlined across the
// module boundary. `scripts/instructions.sh` runs its loops under callgrind.
import PackageDescription

let package = Package(
    name: "swift-mm-instruction-count",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-mm", path: "../..")],
    targets: [
        .executableTarget(
            name: "HotLoops",
            dependencies: [.product(name: "MM", package: "swift-mm")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

// swift-tools-version: 6.1
// Benchmark harness: the pure scheduler and reconciler (issue 5), in release, on synthetic clusters. Its own
// package, like ../raft-bench, so nothing benchmark-only is ever a dependency of the product. See
// ../scheduler-bench.sh.
import Foundation
import PackageDescription

// A path dependency is named by its folder (lower-cased), which is wherever the repository was cloned.
let flotillaIdentity = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "scheduler-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "scheduler-bench",
            dependencies: [.product(name: "FlotillaScheduling", package: flotillaIdentity)],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

// swift-tools-version: 6.1
// Benchmark harness: Flotilla's controllers (Raft) vs etcd, committed writes on loopback; placements end to
// end with simulated agents (../placement-bench.sh); container start latency (../start-bench.sh). Its own package,
// like ../rpc-bench, so nothing benchmark-only is ever a dependency of the product. See ../raft-bench.sh.
import Foundation
import PackageDescription

// A path dependency is named by its folder (lower-cased), which is wherever the repository was cloned.
let flotillaIdentity = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "raft-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../.."),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "raft-bench",
            dependencies: [
                .product(name: "FlotillaAdminClient", package: flotillaIdentity),
                .product(name: "FlotillaTransport", package: flotillaIdentity),
                .product(name: "FlotillaAgent", package: flotillaIdentity),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Container start latency through the agent's worker and OCI driver (../start-bench.sh).
        .executableTarget(
            name: "start-bench",
            dependencies: [
                .product(name: "FlotillaAgent", package: flotillaIdentity),
                .product(name: "FlotillaTransport", package: flotillaIdentity),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

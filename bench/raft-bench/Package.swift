// swift-tools-version: 6.1
// Benchmark harness: Flotilla's controllers (Raft) vs etcd, committed writes on loopback. Its own package,
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
    ],
    targets: [
        .executableTarget(
            name: "raft-bench",
            dependencies: [
                .product(name: "FlotillaAdminClient", package: flotillaIdentity),
                .product(name: "FlotillaTransport", package: flotillaIdentity),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

// swift-tools-version: 6.1
// Package.swift is the architecture diagram: one target per concept, arrows pointing down only.
// Pure targets (ClusterModel, ...) import no NIO and do no I/O. See docs/architecture.md.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// Whole-module optimization for targets whose tests are compute-bound simulations (debug builds only
/// change the default; release builds are optimized anyway).
let optimized: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "flotilla",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "flotilla-controller", targets: ["flotilla-controller"]),
        .executable(name: "flotilla-agent", targets: ["flotilla-agent"]),
        .executable(name: "flotilla", targets: ["flotilla"]),
        // Libraries for the benchmark harnesses under bench/ (separate packages, so the product never
        // depends on what they compare against).
        .library(name: "FlotillaTransport", targets: ["Transport", "Wire", "Messages", "PKI", "ClusterModel"]),
        .library(name: "FlotillaAdminClient", targets: ["AdminClient"]),
        // The agent's session and worker, for benchmarks that simulate many agents in one process.
        .library(name: "FlotillaAgent", targets: ["Agent", "ContainerRuntime"]),
        .library(name: "FlotillaScheduling", targets: ["Scheduler", "Orchestrator", "ClusterStore", "ClusterModel", "Messages"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // MARK: - Pure cores
        .target(name: "ClusterModel", swiftSettings: strict),
        // Generated protobuf types (from proto/), no I/O: shared by the wire layer and the pure cores.
        .target(
            name: "Messages",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // The system zlib, for CRC-32 checksums of write-ahead-log records.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Linux's epoll and eventfd headers, for the load balancer's TCP relay loops.
        .systemLibrary(name: "CEpoll"),
        .target(
            name: "RaftRuntime",
            dependencies: [
                "Raft", "Messages", "ClusterModel", "CZlib",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                // Metrics are recorded through an injected factory (the process's Prometheus registry).
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // Optimized even in debug builds: the seeded simulation tests run thousands of clusters through it.
        .target(name: "Raft", dependencies: ["ClusterModel"], swiftSettings: strict + optimized),
        // The replicated state machine: tables, deterministic apply, snapshots (protobuf; the runtime compresses).
        // Balancing (pure) names the load-balancing policies and modes that a service spec may choose.
        .target(
            name: "ClusterStore",
            dependencies: ["ClusterModel", "Balancing", "Messages", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strict
        ),
        // Task placement as a pure function: filters, then scores (spread, binpack, spread over a label).
        .target(
            name: "Scheduler",
            dependencies: ["ClusterModel", "ClusterStore", .product(name: "HeapModule", package: "swift-collections")],
            swiftSettings: strict
        ),
        // The leader's control loops as pure decisions over the store: node liveness, reconciling services
        // into tasks (autoscaling joins with its issue).
        .target(name: "Orchestrator", dependencies: ["ClusterModel", "ClusterStore", "Scheduler", "Messages"], swiftSettings: strict),
        // Load-balancing policies, outlier detection, slow start and backend tables: what a balancer decides,
        // with time and randomness passed in (the LoadBalancer shell moves the bytes).
        .target(name: "Balancing", dependencies: ["ClusterModel"], swiftSettings: strict + optimized),

        // MARK: - Wire and transport
        .target(
            name: "Wire",
            dependencies: [
                "ClusterModel", "Messages",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PKI",
            dependencies: [
                "ClusterModel",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Transport",
            dependencies: [
                "Wire", "PKI", "ClusterModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Shells
        .target(
            name: "Controller",
            dependencies: [
                "Wire", "Transport", "PKI", "ClusterModel", "Raft", "RaftRuntime", "ClusterStore", "Orchestrator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // Service files for `flotilla apply -f`: YAML to service specs, every key checked.
        .target(
            name: "ServiceFiles",
            dependencies: ["Messages", "ClusterStore", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict
        ),
        // The agent: joining, the session with the leader (containers and the load balancer join it later).
        // How tasks run on a node: the ContainerRuntime protocol, the process driver, health probes (the OCI
        // driver, images and node networking join it with issue 6).
        .target(
            name: "ContainerRuntime",
            dependencies: [
                "ClusterModel", "Messages", "CZlib",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                // Registry pulls (OCI Distribution API over HTTPS).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
        // The node's load balancer: listeners, L4 TCP and L7 HTTP/1.1 forwarding on NIO (HTTP framed by its own
// parser, not NIOHTTP1), choosing with Balancing.
        .target(
            name: "LoadBalancer",
            dependencies: [
                // Messages: the wire form of its statistics (BalancerReport), which agents send to the leader.
                "Balancing", "ClusterModel", "Messages", "CEpoll",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Release builds skip dynamic exclusivity checks here: they cost more than the work on the hot path
            // (swift_beginAccess per field access), and every handler's state is touched only on its own event
            // loop with no overlapping inout access. Debug builds, which the tests run, still check.
            swiftSettings: strict + optimized + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .target(
            name: "Agent",
            dependencies: [
                "Wire", "Transport", "PKI", "ClusterModel", "ContainerRuntime", "Balancing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // The /metrics endpoint (plain HTTP/1.1, GET only) both executables serve, the Prometheus registry's
        // factory they record into, and the load balancer's statistics exported as Prometheus text at scrape time.
        .target(
            name: "MetricsEndpoint",
            dependencies: [
                "LoadBalancer", "ClusterModel",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "AdminClient",
            dependencies: ["Wire", "Transport", "PKI", "ClusterModel"],
            swiftSettings: strict
        ),
        .target(
            // Pure: a linearizability checker for concurrent histories (the fault suite's read/write/CAS checks).
            name: "Linearizability",
            swiftSettings: strict
        ),
        .target(
            name: "TestSupport",
            dependencies: ["Wire", "Transport", "PKI", "ClusterModel", "ContainerRuntime",
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: strict
        ),

        // MARK: - Executables (thin: flags -> config -> run)
        .executableTarget(
            name: "flotilla-controller",
            dependencies: [
                "Controller", "PKI", "Wire", "Transport", "ClusterModel", "MetricsEndpoint",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "flotilla-agent",
            dependencies: [
                "Agent", "ContainerRuntime", "Transport", "PKI", "Wire", "ClusterModel", "LoadBalancer", "Balancing", "ServiceFiles",
                "ClusterStore", "Messages", "MetricsEndpoint", .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "flotilla",
            dependencies: [
                "AdminClient", "ClusterModel", "ClusterStore", "PKI", "Wire", "ServiceFiles",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Tests
        .testTarget(name: "WireTests", dependencies: ["Wire", "TestSupport", "ClusterModel"], swiftSettings: strict),
        .testTarget(
            name: "TransportTests",
            dependencies: ["Transport", "Wire", "PKI", "TestSupport",
                           .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ClusterStoreTests",
            dependencies: ["ClusterStore", "ClusterModel", "Messages",
                           .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strict
        ),
        .testTarget(name: "PKITests", dependencies: ["PKI"], swiftSettings: strict),
        .testTarget(name: "ClusterModelTests", dependencies: ["ClusterModel"], swiftSettings: strict),
        .testTarget(name: "ContainerRuntimeTests", dependencies: ["ContainerRuntime", "ClusterModel", "Messages", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "AgentTests",
            dependencies: ["Agent", "ContainerRuntime", "Messages", "Balancing", "TestSupport", "Transport", "Wire",
                           .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: strict
        ),
        .testTarget(name: "OrchestratorTests", dependencies: ["Orchestrator", "ClusterStore", "ClusterModel", "Messages"], swiftSettings: strict),
        .testTarget(name: "ServiceFilesTests", dependencies: ["ServiceFiles", "Messages", "ClusterStore"], swiftSettings: strict),
        .testTarget(
            name: "MetricsEndpointTests",
            dependencies: ["MetricsEndpoint", "LoadBalancer", "TestSupport",
                           .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "CoreMetrics", package: "swift-metrics"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(name: "BalancingTests", dependencies: ["Balancing"], swiftSettings: strict),
        .testTarget(
            name: "LoadBalancerTests",
            dependencies: ["LoadBalancer", "Balancing", "TestSupport",
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "ClusterStore", "ClusterModel"], swiftSettings: strict),
        .testTarget(
            name: "RaftRuntimeTests",
            dependencies: ["RaftRuntime", "Raft", "ClusterModel", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability"], swiftSettings: strict),
        .testTarget(name: "RaftTests", dependencies: ["Raft", "ClusterModel"], swiftSettings: strict + optimized),
        .testTarget(
            name: "ControllerTests",
            dependencies: [
                "Controller", "AdminClient", "TestSupport", "Agent", "ContainerRuntime", "Messages", "Balancing", "LoadBalancer",
                "MetricsEndpoint", "Linearizability", .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
    ]
)

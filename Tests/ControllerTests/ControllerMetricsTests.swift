import Controller
import Foundation
import Logging
import MetricsEndpoint
import Prometheus
import TestSupport
import Testing

@Suite("Controller metrics")
struct ControllerMetricsTests {
    @Test("a controller's /metrics parses as Prometheus text and shows it leading, its log indexes, WAL latencies and tasks")
    func raftMetricsScraped() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-metrics-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = ControllerDataDirectory(path: root)
        _ = try directory.initialize(addresses: [], now: Date())
        let registry = PrometheusCollectorRegistry()
        var configuration = ControllerConfiguration(dataDirectory: root, listenAddress: "127.0.0.1:0")
        configuration.metrics = FlotillaMetrics.factory(registry: registry)
        let server = try await ControllerServer(
            configuration: configuration, credentials: try directory.loadCredentials(addresses: [], now: Date()),
            logger: Logger(label: "test"))
        let endpoint = try await MetricsEndpoint.bind(
            host: "127.0.0.1", port: 0,
            exposition: MetricsExposition(registry: registry, collectors: [{ _ in server.refreshMetrics() }]),
            logger: Logger(label: "test"))
        let serving = Task { try await endpoint.run() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let port = endpoint.port
            // From a thread of its own: the endpoint renders on the cooperative pool, which a blocking client
            // on it would starve.
            @Sendable func scrape() async throws -> PrometheusExposition {
                let response = try await onOwnThread { try TestHTTPClient(port: port).request("/metrics") }
                #expect(response.status == 200)
                return try PrometheusExposition(parsing: response.body)
            }
            // Leading, with its first entries committed and applied.
            let leading = try await eventually { try await scrape().value("flotilla_raft_is_leader") == 1 }
            #expect(leading)
            let status = await server.raftStatus
            let parsed = try await scrape()
            #expect(parsed.families["flotilla_raft_term"]?.type == "gauge")
            #expect((parsed.value("flotilla_raft_term") ?? 0) >= 1)
            #expect((parsed.value("flotilla_raft_commit_index") ?? 0) >= 1)
            #expect((parsed.value("flotilla_raft_applied_index") ?? 0) >= 1)
            #expect((parsed.value("flotilla_raft_last_index") ?? 0) >= Double(status.commitIndex.rawValue))
            #expect(parsed.families["flotilla_raft_wal_append_seconds"]?.type == "histogram")
            #expect((parsed.value("flotilla_raft_wal_append_seconds_count") ?? 0) >= 1)
            #expect((parsed.value("flotilla_raft_wal_fsync_seconds_count") ?? 0) >= 1)
            #expect(parsed.value("flotilla_sessions") == 0)
            #expect(parsed.value("flotilla_tasks", ["state": "running"]) == 0)
            #expect(parsed.value("flotilla_nodes", ["status": "ready"]) == 0)
            if let sum = parsed.value("flotilla_raft_wal_fsync_seconds_sum"), let count = parsed.value("flotilla_raft_wal_fsync_seconds_count") {
                print("fsync: \(Int(count)) in \(sum) s (mean \(sum / count * 1e6) µs)")
            }
            server.beginGracefulShutdown()
            try await group.waitForAll()
        }
        serving.cancel()
        try await serving.value
    }
}

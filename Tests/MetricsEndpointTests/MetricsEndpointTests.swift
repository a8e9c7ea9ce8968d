import CoreMetrics
import Foundation
import LoadBalancer
import Logging
import MetricsEndpoint
import Prometheus
import TestSupport
import Testing

@Suite("Metrics endpoint")
struct MetricsEndpointTests {
    /// Runs an endpoint on a free loopback port serving `exposition` for the length of `body`.
    static func withEndpoint(
        _ exposition: MetricsExposition, configuration: MetricsEndpointConfiguration = .init(),
        _ body: @Sendable (_ port: Int) async throws -> Void
    ) async throws {
        let endpoint = try await MetricsEndpoint.bind(
            host: "127.0.0.1", port: 0, exposition: exposition, configuration: configuration, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await endpoint.run() }
            try await body(endpoint.port)
            group.cancelAll()
            try await group.waitForAll()
        }
    }

    /// GETs `path` from a thread of its own (the endpoint renders on the cooperative pool, which a blocking
    /// client on it would starve).
    static func get(_ port: Int, _ path: String, method: String = "GET") async throws -> TestHTTPClient.Response {
        try await onOwnThread { try TestHTTPClient(port: port).request(path, method: method) }
    }

    /// Sends raw bytes and reads until the endpoint closes.
    static func exchange(_ port: Int, _ text: String) async throws -> String? {
        try await onOwnThread { TestTCPClient.exchange(port: port, send: text, halfClose: false) }
    }

    static func scrape(_ port: Int) async throws -> (response: TestHTTPClient.Response, exposition: PrometheusExposition) {
        let response = try await get(port, "/metrics")
        return (response, try PrometheusExposition(parsing: response.body))
    }

    static func backend(_ id: String, requests: UInt64, latenciesMicros: [UInt64]) -> BackendStats {
        var stats = BackendStats(id: id, address: "10.0.0.1:80", weight: 1)
        stats.requests = requests
        stats.connections = 2
        stats.errors = 1
        stats.bytesIn = 1 << 40
        for micros in latenciesMicros { stats.latency.record(micros: micros) }
        return stats
    }

    @Test("GET /metrics answers the registry's metrics and the collectors' in Prometheus text format")
    func scrapeParses() async throws {
        let registry = PrometheusCollectorRegistry()
        let factory = FlotillaMetrics.factory(registry: registry)
        CoreMetrics.Counter(label: "test_events_total", dimensions: [("kind", "a \"quoted\\ value\nwith a newline")], factory: factory)
            .increment(by: 3)
        CoreMetrics.Gauge(label: "test_depth", factory: factory).record(7)
        let timer = CoreMetrics.Timer(label: "flotilla_raft_wal_fsync_seconds", factory: factory)
        for micros in [40, 300, 2_000, 2_000_000] { timer.recordMicroseconds(micros) }
        var web = ServiceStats(
            service: "web", mode: "http", policy: "round-robin",
            backends: [Self.backend("t1", requests: 5, latenciesMicros: [80, 900, 30_000_000]), Self.backend("t2", requests: 0, latenciesMicros: [])],
            rejected: 4)
        web.serviceName = "web"
        web.publishedPort = 8080
        web.held = 2
        web.holdTimeouts = 1
        let services = [web]
        let exposition = MetricsExposition(registry: registry, collectors: [{ LoadBalancerMetrics.write(services, into: &$0) }])

        try await Self.withEndpoint(exposition) { port in
            let (response, parsed) = try await Self.scrape(port)
            #expect(response.status == 200)
            #expect(response.headers.contains { $0.0.lowercased() == "content-type" && $0.1.hasPrefix("text/plain; version=0.0.4") })
            #expect(parsed.value("test_events_total", ["kind": "a \"quoted\\ value\nwith a newline"]) == 3)
            #expect(parsed.value("test_depth") == 7)
            #expect(parsed.families["flotilla_raft_wal_fsync_seconds"]?.type == "histogram")
            #expect(parsed.value("flotilla_raft_wal_fsync_seconds_count") == 4)
            #expect(parsed.value("flotilla_raft_wal_fsync_seconds_bucket", ["le": "0.00005"]) == 1)
            #expect(parsed.value("flotilla_raft_wal_fsync_seconds_bucket", ["le": "0.0005"]) == 2)
            #expect(parsed.value("flotilla_lb_requests_total", ["service": "web", "port": "8080", "backend": "t1"]) == 5)
            #expect(parsed.value("flotilla_lb_requests_total", ["backend": "t2"]) == 0)
            #expect(parsed.value("flotilla_lb_received_bytes_total", ["backend": "t1"]) == Double(1 << 40))
            #expect(parsed.value("flotilla_lb_rejected_total", ["service": "web"]) == 4)
            #expect(parsed.value("flotilla_lb_held", ["service": "web", "port": "8080"]) == 2)
            #expect(parsed.value("flotilla_lb_hold_timeouts_total", ["service": "web"]) == 1)
            #expect(parsed.value("flotilla_lb_latency_seconds_count", ["backend": "t1"]) == 3)
            #expect(parsed.value("flotilla_lb_latency_seconds_bucket", ["backend": "t1", "le": "0.0001"]) == 1)
            #expect(parsed.value("flotilla_lb_latency_seconds_bucket", ["backend": "t1", "le": "10"]) == 2)
            #expect(parsed.value("flotilla_lb_latency_seconds_bucket", ["backend": "t1", "le": "+Inf"]) == 3)
            #expect(parsed.families["flotilla_lb_latency_seconds"]?.help?.isEmpty == false)
            print("scrape: \(response.body.utf8.count) bytes, \(parsed.families.count) families")
        }
    }

    @Test("the parser refuses what Prometheus would refuse")
    func parserIsStrict() {
        let bad = [
            "# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",                      // a series twice
            "x 1\ny 1\nx{a=\"2\"} 1\n",                                            // a family in two groups
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  // counts decrease
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",    // +Inf ≠ count
            "x{a=\"\\q\"} 1\n",                                                     // bad escape
            "x 1 2 3\n",                                                            // too many fields
            "1x 1\n",                                                               // bad name
            "x one\n",                                                              // bad value
            "x 1\n# TYPE x gauge\n",                                                // TYPE after samples
        ]
        for text in bad {
            let parsed = try? PrometheusExposition(parsing: text)
            #expect(parsed == nil, "accepted: \(text)")
        }
        let good = "# HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\nup NaN\n"
        #expect((try? PrometheusExposition(parsing: good))?.value("h_count") == 2)
    }

    @Test("a malformed request gets 400, another path 404, another method 405, a body 413; the endpoint keeps serving")
    func badRequests() async throws {
        let registry = PrometheusCollectorRegistry()
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "test", unitName: "up", helpText: "Always 1.")).set(to: 1)
        var configuration = MetricsEndpointConfiguration()
        configuration.maxBodyBytes = 16
        try await Self.withEndpoint(MetricsExposition(registry: registry), configuration: configuration) { port in
            let garbage = try await Self.exchange(port, "NOT HTTP AT ALL\r\n\r\n") ?? ""
            #expect(garbage.hasPrefix("HTTP/1.1 400"), "\(garbage)")
            let other = try await Self.get(port, "/other")
            #expect(other.status == 404)
            let post = try await Self.get(port, "/metrics", method: "POST")
            #expect(post.status == 405)
            let body = String(repeating: "x", count: 64)
            let tooLarge = try await Self.exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n\(body)") ?? ""
            #expect(tooLarge.hasPrefix("HTTP/1.1 413"), "\(tooLarge)")
            let (response, parsed) = try await Self.scrape(port)
            #expect(response.status == 200)
            #expect(parsed.value("test_up") == 1)
        }
    }

    @Test("a connection that sends nothing is closed at the connection timeout")
    func idleConnectionClosed() async throws {
        var configuration = MetricsEndpointConfiguration()
        configuration.connectionTimeout = .milliseconds(200)
        try await Self.withEndpoint(MetricsExposition(registry: PrometheusCollectorRegistry()), configuration: configuration) { port in
            // The client waits up to 10 s; the server's close ends the wait with nothing received.
            let reply = try await Self.exchange(port, "")
            #expect(reply == "")
            let after = try await Self.get(port, "/metrics")
            #expect(after.status == 200)
        }
    }

    @Test("a taken address fails the bind; the process goes on")
    func bindFailure() async throws {
        try await Self.withEndpoint(MetricsExposition(registry: PrometheusCollectorRegistry())) { port in
            await #expect(throws: (any Error).self) {
                _ = try await MetricsEndpoint.bind(
                    host: "127.0.0.1", port: port, exposition: MetricsExposition(registry: PrometheusCollectorRegistry()),
                    logger: Logger(label: "test"))
            }
            // `serve` logs the failure and waits for the shutdown instead of ending the process's task group.
            let served = Task {
                await MetricsEndpoint.serve(
                    at: .listen(host: "127.0.0.1", port: port), exposition: MetricsExposition(registry: PrometheusCollectorRegistry()),
                    logger: Logger(label: "test"))
            }
            served.cancel()
            await served.value
        }
    }

    @Test("--metrics-address takes host:port or off")
    func addressParsing() {
        #expect(MetricsAddress(parsing: "off") == .off)
        #expect(MetricsAddress(parsing: "127.0.0.1:0") == .listen(host: "127.0.0.1", port: 0))
        #expect(MetricsAddress(parsing: "[::1]:9464") == .listen(host: "::1", port: 9464))
        #expect(MetricsAddress(parsing: "9464") == nil)
        #expect(MetricsAddress.controllerDefault != MetricsAddress.agentDefault)
    }
}

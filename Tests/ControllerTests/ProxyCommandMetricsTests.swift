import ContainerRuntime
import Foundation
import NIOPosix
import TestSupport
import Testing

/// `flotilla-agent proxy` as a process: its /metrics endpoint, and a bad address refused before it starts.
@Suite("Standalone proxy metrics", .serialized)
struct ProxyCommandMetricsTests {
    @Test("the standalone proxy's /metrics parses as Prometheus text and counts the requests it forwarded")
    func proxyMetricsScraped() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let backend = try await TestHTTPBackend.start(name: "only", group: group)
        let listen = try ControllerKillTests.freePort()
        let metrics = try ControllerKillTests.freePort()
        let proxy = try ChildProcess(try FlotillaBinaries.path("flotilla-agent"), [
            "proxy", "--listen", "127.0.0.1:\(listen)", "--backend", "127.0.0.1:\(backend.port)", "--mode", "http",
            "--metrics-address", "127.0.0.1:\(metrics)",
        ])
        do {
            let served = try await eventually(timeout: .seconds(20)) {
                (try? await onOwnThread { try TestHTTPClient(port: listen).request("/") })?.status == 200
            }
            #expect(served, "the proxy did not serve: \(proxy.standardError)")
            for _ in 0..<4 { _ = try await onOwnThread { try TestHTTPClient(port: listen).request("/", close: true) } }
            let response = try await onOwnThread { try TestHTTPClient(port: metrics).request("/metrics") }
            #expect(response.status == 200)
            let parsed = try PrometheusExposition(parsing: response.body)
            #expect(parsed.families["flotilla_lb_requests_total"]?.type == "counter")
            let requests = parsed.families["flotilla_lb_requests_total"]?.samples.map(\.value).reduce(0, +) ?? 0
            #expect(requests >= 5, "requests counted: \(requests)")
            #expect(parsed.families["flotilla_lb_latency_seconds"]?.type == "histogram")
        } catch {
            Issue.record("\(error); proxy stderr: \(proxy.standardError)")
        }
        await proxy.stop()
        await backend.kill()
        try await group.shutdownGracefully()
    }

    @Test("a --metrics-address that is not host:port is refused with a usage error before anything listens")
    func badMetricsAddress() async throws {
        let listen = try ControllerKillTests.freePort()
        let result = try await ChildProcess.run(try FlotillaBinaries.path("flotilla-agent"), [
            "proxy", "--listen", "127.0.0.1:\(listen)", "--backend", "127.0.0.1:1", "--metrics-address", "nowhere",
        ], timeout: .seconds(30))
        #expect(result.status != 0)
        #expect(result.stderr.contains("--metrics-address nowhere"))
    }
}

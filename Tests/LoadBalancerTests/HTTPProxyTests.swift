import Balancing
import LoadBalancer
import NIOCore
import NIOPosix
import TestSupport
import Testing

/// The balancer in HTTP mode, in process on loopback, in front of small NIO backends.
@Suite struct HTTPProxyTests {
    static func withProxy(
        backends count: Int, settings: ProxySettings = ProxySettings(mode: .http),
        _ body: (StandaloneProxy, [TestHTTPBackend]) async throws -> Void
    ) async throws {
        try await ProxyFixture.run(
            backends: count, settings: settings, start: { try await TestHTTPBackend.start(name: $0, group: $1) },
            port: { $0.port }, stop: { await $0.kill() }, body)
    }

    @Test func requestsOnOneKeepAliveConnectionAreSpreadRoundRobinWithTheClientAddressForwarded() async throws {
        try await Self.withProxy(backends: 3) { proxy, backends in
            let client = TestHTTPClient(port: proxy.port)
            var answers: [String: Int] = [:]
            for index in 0..<300 {
                let response = try client.request("/item/\(index)")
                #expect(response.status == 200)
                #expect(response.body.contains("xff=127.0.0.1 path=/item/\(index)"))
                answers[String(response.body.prefix(2)), default: 0] += 1
            }
            print("round robin over 3 backends, 300 requests on one connection:", answers.sorted { $0.key < $1.key })
            #expect(answers == ["b0": 100, "b1": 100, "b2": 100])
            let stats = try await proxy.stats()
            #expect(stats.backends.map(\.requests).reduce(0, +) == 300)
            #expect(stats.backends.allSatisfy { $0.errors == 0 && $0.active == 0 })
        }
    }

    @Test func aBackendKilledUnderLoadCostsNoRequest() async throws {
        try await Self.withProxy(backends: 3) { proxy, backends in
            let clients = (0..<4).map { _ in TestHTTPClient(port: proxy.port) }
            var failures = 0
            for index in 0..<600 {
                if index == 200 { await backends[1].kill() }
                do {
                    let response = try clients[index % clients.count].request("/\(index)")
                    if response.status != 200 { failures += 1 }
                } catch {
                    failures += 1
                }
            }
            let stats = try await proxy.stats()
            let killed = stats.backends.first { $0.id == "b1" }
            print("killed b1 after 200 of 600 requests: failed \(failures); b1 errors \(killed?.errors ?? 0), retries \(killed?.retries ?? 0)")
            #expect(failures == 0)
            #expect(backends[0].requests + backends[2].requests + backends[1].requests >= 600)
        }
    }

    @Test func aHungBackendIsCutByTheRequestTimeoutAndTheRequestAnsweredByAnother() async throws {
        var settings = ProxySettings(mode: .http)
        settings.requestTimeoutMillis = 300
        try await Self.withProxy(backends: 3, settings: settings) { proxy, backends in
            backends[2].behaviour = .hang
            let client = TestHTTPClient(port: proxy.port)
            var statuses: [Int] = []
            for index in 0..<30 { statuses.append(try client.request("/\(index)").status) }
            let stats = try await proxy.stats()
            let hung = stats.backends.first { $0.id == "b2" }
            print("hung b2: statuses \(Set(statuses)), b2 errors \(hung?.errors ?? 0), ejections \(hung?.ejections ?? 0), hung requests seen \(backends[2].requests)")
            #expect(statuses.allSatisfy { $0 == 200 })
            #expect((hung?.errors ?? 0) >= 1)
        }
    }

    @Test func withNoBackendTheClientGets503AndWithNoneReachable502() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let draining = try await StandaloneProxy.start(StandaloneProxyConfig(
            listen: "127.0.0.1:0", backends: [Backend(id: "d", host: "127.0.0.1", port: 9, weight: 0)],
            settings: ProxySettings(mode: .http)))
        let unavailable = try TestHTTPClient(port: draining.port).request()
        await draining.stop()
        #expect(unavailable.status == 503)
        #expect(unavailable.body.contains("no backend is available"))

        // Ports nothing listens on: every attempt is refused.
        let refused = try await StandaloneProxy.start(StandaloneProxyConfig(
            listen: "127.0.0.1:0", backends: [Backend(id: "x", host: "127.0.0.1", port: 1),
                                               Backend(id: "y", host: "127.0.0.1", port: 3)],
            settings: ProxySettings(mode: .http)))
        let badGateway = try TestHTTPClient(port: refused.port).request()
        let stats = try await refused.stats()
        await refused.stop()
        try await group.shutdownGracefully()
        #expect(badGateway.status == 502)
        #expect(badGateway.body.contains("could be reached"))
        #expect(stats.rejected == 1)
    }
}

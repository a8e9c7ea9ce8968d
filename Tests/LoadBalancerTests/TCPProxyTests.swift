import Balancing
import LoadBalancer
import NIOCore
import NIOPosix
import TestSupport
import Testing

/// The balancer in TCP mode, in process on loopback.
@Suite struct TCPProxyTests {
    static func withProxy(
        backends count: Int, extra: [Backend] = [], settings: ProxySettings = ProxySettings(mode: .tcp),
        _ body: (StandaloneProxy, [TestTCPBackend]) async throws -> Void
    ) async throws {
        try await ProxyFixture.run(
            backends: count, extra: extra, settings: settings, start: { try await TestTCPBackend.start(name: $0, group: $1) },
            port: { $0.port }, stop: { await $0.stop() }, body)
    }

    @Test func bytesFlowBothWaysAndAHalfCloseReachesTheBackendWhoseLastWordsReachTheClient() async throws {
        try await Self.withProxy(backends: 1) { proxy, _ in
            let reply = TestTCPClient.exchange(port: proxy.port, send: "hello through the balancer")
            #expect(reply == "hello through the balancerbye from b0")
        }
    }

    @Test func aConnectionIdleForTheIdleTimeoutIsClosedBothWays() async throws {
        var settings = ProxySettings(mode: .tcp)
        settings.idleTimeoutMillis = 300
        try await Self.withProxy(backends: 1, settings: settings) { proxy, _ in
            // The client neither sends more nor closes: the balancer ends it (the client's own limit is 10 s).
            let reply = TestTCPClient.exchange(port: proxy.port, send: "anyone there?", halfClose: false)
            #expect(reply == "anyone there?")
        }
    }

    @Test func aBackendThatRefusesConnectionsCostsNoClientConnection() async throws {
        // Port 1 refuses: every connection first sent there is retried on a live backend.
        try await Self.withProxy(backends: 2, extra: [Backend(id: "dead", host: "127.0.0.1", port: 1)]) { proxy, backends in
            var failed = 0
            for index in 0..<30 {
                let reply = TestTCPClient.exchange(port: proxy.port, send: "c\(index)")
                if reply?.hasPrefix("c\(index)bye from b") != true { failed += 1 }
            }
            let stats = try await proxy.stats()
            let dead = stats.backends.first { $0.id == "dead" }
            print("30 connections with a refusing backend: failed \(failed), dead errors \(dead?.errors ?? 0), retries \(dead?.retries ?? 0)")
            #expect(failed == 0)
            #expect((dead?.errors ?? 0) >= 1)
            #expect(backends.map { $0.connections.count }.reduce(0, +) == 30)
        }
    }

    @Test func withProxyProtocolTheBackendLearnsTheClientAddressFirst() async throws {
        var settings = ProxySettings(mode: .tcp)
        settings.proxyProtocol = true
        try await Self.withProxy(backends: 1, settings: settings) { proxy, backends in
            let reply = TestTCPClient.exchange(port: proxy.port, send: "payload")
            let bytes = backends[0].connections.first ?? []
            let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
            #expect(Array(bytes.prefix(12)) == signature)
            #expect(bytes.count >= 28 + 7)
            if bytes.count >= 35 {
                #expect(bytes[12] == 0x21 && bytes[13] == 0x11)  // v2 PROXY, TCP over IPv4
                #expect(Array(bytes[16..<20]) == [127, 0, 0, 1])  // the client
                let destinationPort = Int(bytes[26]) << 8 | Int(bytes[27])
                #expect(destinationPort == proxy.port)
                #expect(String(decoding: bytes[28...], as: UTF8.self) == "payload")
            }
            #expect(reply?.hasSuffix("bye from b0") == true)
        }
    }
}

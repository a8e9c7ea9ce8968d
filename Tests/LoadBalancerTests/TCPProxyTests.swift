import Balancing
import LoadBalancer
import NIOCore
import NIOPosix
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

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

    @Test func aLargeStreamBothWaysArrivesWholeWhileTheClientReadsNothingUntilItHasSentAll() async throws {
        // 4 MiB echoed back while the client is still sending: the proxy must hold what the client cannot take
        // yet and stop reading the backend meanwhile (backpressure), then go on when the client reads.
        let payload = String((0..<(4 << 20)).map { index in Character(UnicodeScalar(UInt8(97 + index % 26))) })
        try await Self.withProxy(backends: 1) { proxy, _ in
            let reply = TestTCPClient.exchange(port: proxy.port, send: payload)
            #expect(reply?.count == payload.count + "bye from b0".count)
            #expect(reply == payload + "bye from b0", "the echo came back whole and in order")
        }
    }

    @Test func aBackendThatNeverAnswersTheHandshakeIsLeftAfterTheConnectTimeout() async throws {
        // A listener with a full accept queue drops new handshakes: connecting to it hangs, as to a dead host.
        let blackhole = try Blackhole()
        defer { blackhole.close() }
        var settings = ProxySettings(mode: .tcp)
        settings.connectTimeoutMillis = 200
        try await Self.withProxy(backends: 1, extra: [Backend(id: "hole", host: "127.0.0.1", port: blackhole.port)], settings: settings) { proxy, _ in
            var failed = 0
            for index in 0..<6 {
                let reply = TestTCPClient.exchange(port: proxy.port, send: "c\(index)")
                if reply != "c\(index)bye from b0" { failed += 1 }
            }
            let hole = try await proxy.stats().backends.first { $0.id == "hole" }
            print("6 connections with a black-holed backend: failed \(failed), hole errors \(hole?.errors ?? 0), ejected \(hole?.ejected ?? false)")
            #expect(failed == 0)
            #expect((hole?.errors ?? 0) >= 1)
        }
    }
}

/// A TCP listener whose accept queue is full and never drained: further handshakes get no answer.
private struct Blackhole {
    let listener: Int32
    let fillers: [Int32]
    let port: Int

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        listen(listener, 0)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        // A backlog of 0 still queues one connection; fill it (the second waits in SYN-sent, as ours will).
        var fillers: [Int32] = []
        for _ in 0..<2 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            fillers.append(fd)
        }
        usleep(50_000)
        self.listener = listener
        self.fillers = fillers
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        for fd in fillers { Glibc.close(fd) }
        Glibc.close(listener)
    }
}

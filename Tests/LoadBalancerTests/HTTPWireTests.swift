import Balancing
import LoadBalancer
import NIOCore
import NIOPosix
import TestSupport
import Testing

/// The balancer in HTTP mode as seen on the wire: the exact bytes a backend gets and a client gets back.
@Suite struct HTTPWireTests {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    static func withScriptedBackend(
        response: String, close: Bool = false, _ body: (StandaloneProxy, ScriptedBackend) async throws -> Void
    ) async throws {
        try await ProxyFixture.run(
            backends: 1, settings: ProxySettings(mode: .http),
            start: { _, group in try await ScriptedBackend.start(group: group, response: response, close: close) },
            port: { $0.port }, stop: { await $0.stop() }) { proxy, backends in try await body(proxy, backends[0]) }
    }

    static func exchange(_ port: Int, _ text: String, halfClose: Bool = false) -> String {
        TestTCPClient.exchange(port: port, send: text, halfClose: halfClose) ?? "<failed or reset>"
    }

    @Test func pipelinedRequestsAreAnsweredInOrderEachBalancedOnItsOwn() async throws {
        try await HTTPProxyTests.withProxy(backends: 3) { proxy, _ in
            let three = (1...3).map { "GET /\($0) HTTP/1.1\r\nHost: h\r\n\r\n" }.joined()
            // Sent in one write, then the client half-closes: every request is still answered, in order.
            let reply = Self.exchange(proxy.port, three, halfClose: true)
            let answers = ["b0 xff=127.0.0.1 path=/1\n", "b1 xff=127.0.0.1 path=/2\n", "b2 xff=127.0.0.1 path=/3\n"]
            let positions = answers.compactMap { reply.range(of: $0)?.lowerBound }
            #expect(positions.count == 3)
            #expect(positions == positions.sorted())
            #expect(reply.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 4)
        }
    }

    @Test func aSmugglingAttemptIsRefusedAndNothingOfItReachesABackend() async throws {
        try await HTTPProxyTests.withProxy(backends: 2) { proxy, backends in
            let smuggled = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                + "GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
            let reply = Self.exchange(proxy.port, smuggled)
            #expect(reply.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
            #expect(reply.contains("connection: close\r\n"))
            #expect(reply.hasSuffix("400 Bad Request: both Content-Length and Transfer-Encoding are given\n"))
            #expect(!reply.contains("admin"))
            #expect(backends.map(\.requests) == [0, 0])
            let stats = try await proxy.stats()
            #expect(stats.rejected == 1)
        }
    }

    @Test func aHeadOver64KiBGets431EvenWhileTheClientIsStillSending() async throws {
        try await HTTPProxyTests.withProxy(backends: 1) { proxy, backends in
            let huge = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + String(repeating: "a", count: 100_000) + "\r\n\r\n"
            let reply = Self.exchange(proxy.port, huge)
            #expect(reply.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
            #expect(reply.contains("larger than 64 KiB"))
            #expect(backends[0].requests == 0)
        }
    }

    @Test func aChunkedRequestReachesTheBackendAsSentUnderAHeadWrittenAnew() async throws {
        try await Self.withScriptedBackend(response: Self.ok) { proxy, backend in
            let request = "POST /up HTTP/1.1\r\nhost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nUpgrade: x\r\n\r\n"
            let body = "5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
            let reply = Self.exchange(proxy.port, request + body)
            #expect(reply == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            #expect(backend.requests == [
                "POST /up HTTP/1.1\r\nhost: h\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 127.0.0.1\r\n"
                    + "X-Forwarded-Proto: http\r\n\r\n" + body,
            ])
        }
    }

    @Test func anHTTP10ClientGetsAChunkedResponseDecodedAndEndedByClose() async throws {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        try await Self.withScriptedBackend(response: chunked) { proxy, backend in
            let reply = Self.exchange(proxy.port, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            #expect(reply == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world")
            #expect(backend.requests == ["GET / HTTP/1.1\r\nHost: \r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"])
        }
    }

    @Test func anHTTP11ClientGetsAChunkedResponseAsItCame() async throws {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        try await Self.withScriptedBackend(response: chunked) { proxy, _ in
            let reply = Self.exchange(proxy.port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            #expect(reply == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        }
    }

    @Test func aResponseWithoutLengthRunsUntilTheBackendClosesAndEndsTheClientConnection() async throws {
        let unframed = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until close"
        try await Self.withScriptedBackend(response: unframed, close: true) { proxy, _ in
            // A keep-alive request: the balancer itself says it will close, since only the close ends the body.
            let reply = Self.exchange(proxy.port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            #expect(reply == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nstreamed until close")
        }
    }

    @Test func a100ContinueReachesTheClientBeforeTheFinalResponse() async throws {
        try await Self.withScriptedBackend(response: "HTTP/1.1 100 Continue\r\n\r\n" + Self.ok) { proxy, _ in
            let reply = Self.exchange(
                proxy.port, "PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            #expect(reply == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        }
    }

    @Test func aMalformedResponseBecomesA502SayingWhy() async throws {
        try await Self.withScriptedBackend(response: "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n") { proxy, _ in
            let reply = Self.exchange(proxy.port, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            #expect(reply.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
            #expect(reply.contains("sent an invalid response: Content-Length is not a decimal number"))
        }
    }

    @Test func aKeepAliveConnectionIdleForTheIdleTimeoutIsClosedAfterItsAnswer() async throws {
        var settings = ProxySettings(mode: .http)
        settings.idleTimeoutMillis = 300
        try await ProxyFixture.run(
            backends: 1, settings: settings, start: { try await TestHTTPBackend.start(name: $0, group: $1) },
            port: { $0.port }, stop: { await $0.kill() }) { proxy, _ in
            // The client keeps the connection and says nothing more: the balancer ends it (the client waits 10 s).
            let reply = Self.exchange(proxy.port, "GET /once HTTP/1.1\r\nHost: h\r\n\r\n")
            #expect(reply.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(reply.hasSuffix("b0 xff=127.0.0.1 path=/once\n"))
        }
    }

    @Test func aRequestBodyHeldWhileConnectingGoesWholeToTheBackendTriedAfterARefusal() async throws {
        try await ProxyFixture.run(
            backends: 1, extra: [Backend(id: "dead", host: "127.0.0.1", port: 1)], settings: ProxySettings(mode: .http),
            start: { _, group in try await ScriptedBackend.start(group: group, response: Self.ok) },
            port: { $0.port }, stop: { await $0.stop() }) { proxy, backends in
            // Round robin sends one of the two to the refusing backend first; its body waits and goes on whole.
            for index in 0..<2 {
                let reply = Self.exchange(
                    proxy.port, "POST /\(index) HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello \(index)body")
                #expect(reply == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            }
            #expect(backends[0].requests.map { $0.hasSuffix("\r\n\r\nhello 0body") || $0.hasSuffix("\r\n\r\nhello 1body") } == [true, true])
            let stats = try await proxy.stats()
            #expect(stats.backends.first { $0.id == "dead" }?.errors == 1)
        }
    }
}

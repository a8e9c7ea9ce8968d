import ClusterModel
import Foundation
import NIOCore
import Synchronization
import TestSupport
import Testing
@testable import Transport
import Wire

/// Deadlines, cancellation and graceful shutdown, as the server's handlers see them.
@Suite("Deadlines, cancellation and GOAWAY")
struct CallLifecycleTests {
    let pki: TestPKI

    init() throws {
        pki = try TestPKI()
    }

    /// A router whose Echo handler sleeps as asked and records how it ended.
    static func recordingRouter(_ outcomes: Recorder) -> RPCRouter {
        var router = RPCRouter()
        router.register(Methods.echo) { request, context in
            outcomes.record("started")
            do {
                try await Task.sleep(for: .milliseconds(Int(request.delayMillis)))
            } catch {
                outcomes.record(context.isCancelled ? "cancelled" : "interrupted")
                throw error
            }
            outcomes.record("finished")
            var response = Flotilla_V1_EchoResponse()
            response.payload = request.payload
            return response
        }
        return router
    }

    @Test("a deadline that passes fails the call with DEADLINE_EXCEEDED and cancels the server's handler")
    func deadlineReachesServer() async throws {
        let outcomes = Recorder()
        try await withTestServer(credentials: pki.controller, router: Self.recordingRouter(outcomes)) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            var request = Flotilla_V1_EchoRequest()
            request.delayMillis = 10_000
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.unary(Methods.echo, request, options: CallOptions(timeout: .milliseconds(200)))
            }
            #expect(error?.code == .deadlineExceeded)
            #expect(try await eventually { outcomes.events.contains("cancelled") })
            #expect(!outcomes.events.contains("finished"))
            await client.close()
        }
    }

    @Test("cancelling the calling task sends CANCEL and cancels the server's handler")
    func cancellationReachesServer() async throws {
        let outcomes = Recorder()
        try await withTestServer(credentials: pki.controller, router: Self.recordingRouter(outcomes)) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let call = Task {
                var request = Flotilla_V1_EchoRequest()
                request.delayMillis = 10_000
                return try await client.unary(Methods.echo, request)
            }
            #expect(try await eventually { outcomes.events.contains("started") })
            call.cancel()
            await #expect(throws: (any Error).self) { _ = try await call.value }
            #expect(try await eventually { outcomes.events.contains("cancelled") })
            // The connection keeps working for other calls.
            var quick = Flotilla_V1_EchoRequest()
            quick.payload = Data("ok".utf8)
            #expect(try await client.unary(Methods.echo, quick).payload == Data("ok".utf8))
            await client.close()
        }
    }

    @Test("GOAWAY lets in-flight calls finish, refuses new ones, and ends the server")
    func gracefulShutdownDrains() async throws {
        let outcomes = Recorder()
        let server = try await RPCServer.bind(
            host: "127.0.0.1", port: 0, tls: try TLSContexts.server(credentials: pki.controller),
            router: Self.recordingRouter(outcomes))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let inFlight = Task {
                var request = Flotilla_V1_EchoRequest()
                request.delayMillis = 500
                request.payload = Data("slow".utf8)
                return try await client.unary(Methods.echo, request)
            }
            #expect(try await eventually { outcomes.events.contains("started") })
            server.beginGracefulShutdown()
            // The in-flight call completes normally.
            #expect(try await inFlight.value.payload == Data("slow".utf8))
            // New calls are refused with UNAVAILABLE (the connection is going away or gone).
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.unary(Methods.echo, Flotilla_V1_EchoRequest())
            }
            #expect(error?.code == .unavailable)
            // And the server's run() returns by itself.
            try await group.next()
            await client.close()
        }
    }

    @Test("a server streaming handler is slowed by flow control when the client does not read")
    func backpressure() async throws {
        let written = Mutex(0)
        var router = RPCRouter()
        router.register(Methods.echoExpand) { request, writer, _ in
            for index in 0..<request.repeat {
                var response = Flotilla_V1_EchoResponse()
                response.payload = request.payload
                response.sequence = index
                try await writer.write(response)
                written.withLock { $0 += 1 }
            }
        }
        var configuration = TransportConfiguration()
        configuration.initialStreamWindow = 64 << 10
        try await withTestServer(credentials: pki.controller, router: router) { [configuration] server in
            let client = try await connectTestClient(to: server, credentials: pki.agent, configuration: configuration)
            var request = Flotilla_V1_EchoRequest()
            request.payload = Data(repeating: 7, count: 16 << 10)
            request.repeat = 200
            let count = try await client.serverStreaming(Methods.echoExpand, request) { responses in
                // Don't read for a while: the server must stall at about one window (4 messages of 16 KiB).
                try await Task.sleep(for: .milliseconds(300))
                let stalledAt = written.withLock { $0 }
                #expect(stalledAt <= 8, "server wrote \(stalledAt) messages into a 64 KiB window")
                var received = 0
                for try await _ in responses { received += 1 }
                return received
            }
            #expect(count == 200)
            await client.close()
        }
    }
}

/// Thread-safe event log for handlers under test.
final class Recorder: Sendable {
    private let log = Mutex<[String]>([])
    func record(_ event: String) { log.withLock { $0.append(event) } }
    var events: [String] { log.withLock { $0 } }
}

import ClusterModel
import Foundation
import NIOCore
import PKI
import Synchronization
import TestSupport
import Testing
@testable import Transport
import Wire

/// End-to-end calls over mutual TLS on loopback.
@Suite("RPC calls over mTLS")
struct RPCCallTests {
    let pki: TestPKI

    init() throws {
        pki = try TestPKI()
    }

    static func echoRequest(_ text: String, delayMillis: UInt32 = 0, repeat count: UInt32 = 0) -> Flotilla_V1_EchoRequest {
        var request = Flotilla_V1_EchoRequest()
        request.payload = Data(text.utf8)
        request.delayMillis = delayMillis
        request.repeat = count
        return request
    }

    @Test("a unary call returns the response")
    func unary() async throws {
        try await withTestServer(credentials: pki.controller) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let response = try await client.unary(Methods.echo, Self.echoRequest("hello"))
            #expect(String(decoding: response.payload, as: UTF8.self) == "hello")
            #expect(client.peer == PeerIdentity(nodeID: NodeID("controller-1"), role: .controller))
            await client.close()
        }
    }

    @Test("the handler sees the caller's identity from its certificate")
    func peerIdentity() async throws {
        var router = RPCRouter()
        router.register(Methods.echo) { _, context in
            var response = Flotilla_V1_EchoResponse()
            response.payload = Data("\(context.peer.role.rawValue)/\(context.peer.nodeID)".utf8)
            return response
        }
        try await withTestServer(credentials: pki.controller, router: router) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let response = try await client.unary(Methods.echo, Self.echoRequest(""))
            #expect(String(decoding: response.payload, as: UTF8.self) == "agent/agent-1")
            await client.close()
        }
    }

    @Test("server streaming delivers every response in order")
    func serverStreaming() async throws {
        try await withTestServer(credentials: pki.controller) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let sequences = try await client.serverStreaming(Methods.echoExpand, Self.echoRequest("x", repeat: 500)) { responses in
                var seen: [UInt32] = []
                for try await response in responses { seen.append(response.sequence) }
                return seen
            }
            #expect(sequences == Array(0..<500))
            await client.close()
        }
    }

    @Test("bidirectional streaming answers each request, and half-close ends the call")
    func bidirectional() async throws {
        try await withTestServer(credentials: pki.controller) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let answers = try await client.bidirectional(Methods.echoChat) { requests, responses in
                var answers: [String] = []
                var iterator = responses.makeAsyncIterator()
                for word in ["one", "two", "three"] {
                    try await requests.write(Self.echoRequest(word))
                    let response = try await iterator.next()
                    answers.append(String(decoding: response!.payload, as: UTF8.self))
                }
                requests.finish()
                #expect(try await iterator.next() == nil)
                return answers
            }
            #expect(answers == ["one", "two", "three"])
            await client.close()
        }
    }

    @Test("1,000 concurrent calls on one connection all succeed")
    func thousandConcurrentCalls() async throws {
        try await withTestServer(credentials: pki.controller) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let succeeded = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<1_000 {
                    group.addTask {
                        let response = try await client.unary(Methods.echo, Self.echoRequest("call \(index)", delayMillis: 5))
                        return String(decoding: response.payload, as: UTF8.self) == "call \(index)"
                    }
                }
                var count = 0
                for try await ok in group where ok { count += 1 }
                return count
            }
            #expect(succeeded == 1_000)
            await client.close()
        }
    }

    @Test("calls beyond the server's stream limit wait for a slot instead of failing")
    func streamLimitQueues() async throws {
        var configuration = TransportConfiguration()
        configuration.maxConcurrentStreams = 4
        try await withTestServer(credentials: pki.controller, configuration: configuration) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<40 {
                    group.addTask { _ = try await client.unary(Methods.echo, Self.echoRequest("q", delayMillis: 10)) }
                }
                try await group.waitForAll()
            }
            await client.close()
        }
    }

    @Test("a call queued for a stream slot still fails at its deadline")
    func deadlineWhileQueued() async throws {
        var configuration = TransportConfiguration()
        configuration.maxConcurrentStreams = 1
        try await withTestServer(credentials: pki.controller, configuration: configuration) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { _ = try await client.unary(Methods.echo, Self.echoRequest("slow", delayMillis: 2_000)) }
                try await Task.sleep(for: .milliseconds(100))
                let started = ContinuousClock.now
                let error = await #expect(throws: RPCError.self) {
                    _ = try await client.unary(Methods.echo, Self.echoRequest("queued"), options: CallOptions(timeout: .milliseconds(200)))
                }
                #expect(error?.code == .deadlineExceeded)
                #expect(ContinuousClock.now - started < .milliseconds(1_500))
                try await group.waitForAll()
            }
            await client.close()
        }
    }

    @Test("a large message is compressed on the wire and arrives intact")
    func compression() async throws {
        var configuration = TransportConfiguration()
        configuration.compressionThreshold = 1024
        try await withTestServer(credentials: pki.controller, configuration: configuration) { [configuration] server in
            let client = try await connectTestClient(to: server, credentials: pki.agent, configuration: configuration)
            let text = String(repeating: "flotilla ", count: 50_000)
            let response = try await client.unary(Methods.echo, Self.echoRequest(text))
            #expect(String(decoding: response.payload, as: UTF8.self) == text)
            await client.close()
        }
    }

    @Test("a message larger than the peer's maximum frame fails locally with RESOURCE_EXHAUSTED")
    func messageTooLarge() async throws {
        var serverConfiguration = TransportConfiguration()
        serverConfiguration.maxFrameSize = 64 << 10
        try await withTestServer(credentials: pki.controller, configuration: serverConfiguration) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.unary(Methods.echo, Self.echoRequest(String(repeating: "x", count: 100_000)))
            }
            #expect(error?.code == .resourceExhausted)
            // The connection is still good.
            _ = try await client.unary(Methods.echo, Self.echoRequest("still here"))
            await client.close()
        }
    }

    @Test("an unknown method gets UNIMPLEMENTED")
    func unimplemented() async throws {
        let router = RPCRouter()
        try await withTestServer(credentials: pki.controller, router: router) { server in
            let client = try await connectTestClient(to: server, credentials: pki.agent)
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.unary(Methods.echo, Self.echoRequest("x"))
            }
            #expect(error?.code == .unimplemented)
            #expect(error?.message.contains("flotilla.v1.Echo/Echo") == true)
            await client.close()
        }
    }
}

import AdminClient
import Agent
import ClusterModel
import Controller
import Crypto
import Foundation
import Logging
import PKI
import TestSupport
import Testing
import Transport
import Wire
import SwiftASN1
import X509

/// Joining with tokens, against one controller in this process: the way in, and every way of being refused.
@Suite("Joining with tokens", .serialized)
struct JoinTests {
    /// A one-controller cluster and an admin client, for the duration of `body`.
    static func withCluster(_ body: (_ address: String, _ admin: AdminClient) async throws -> Void) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-join-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let created = try ControllerDataDirectory(path: root).initialize(addresses: [], now: Date())
        let running = try await ControllerClusterTests.start(root)
        do {
            let server = running.server
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(
                to: [running.server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            try await body(running.server.localAddress, admin)
            // Whatever happened, the controller still serves.
            _ = try await admin.status()
            await admin.close()
        } catch {
            await ControllerClusterTests.stop(running)
            throw error
        }
        await ControllerClusterTests.stop(running)
    }

    static func agent(_ name: String = "") -> NodeJoiner.Request {
        .init(role: .agent, name: name, labels: ["zone": "a"], advertiseAddress: "127.0.0.1", version: "test")
    }

    /// The error a join fails with (nil when it succeeds).
    static func joinError(_ address: String, _ token: JoinToken, _ request: NodeJoiner.Request = agent()) async -> RPCError? {
        do {
            _ = try await NodeJoiner.join(controllers: [address], token: token, request: request)
            return nil
        } catch let error as RPCError {
            return error
        } catch {
            return RPCError(.unknown, "\(error)")
        }
    }

    /// Calls Join by hand as a caller without a certificate, to send what NodeJoiner never would.
    static func rawJoin(_ address: String, pin: [UInt8], _ request: Flotilla_V1_NodeJoinRequest) async throws -> Flotilla_V1_NodeJoinResponse {
        let (host, port) = try #require(HostPort.parse(address))
        let client = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.joiner(), pinnedCA: pin)
        defer { Task { await client.close() } }
        return try await client.unary(Methods.nodeJoin, request, options: CallOptions(timeout: .seconds(5)))
    }

    @Test("an agent joins with a token, gets a certificate for the key it made, and then speaks mutual TLS")
    func agentJoins() async throws {
        try await Self.withCluster { address, admin in
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let credentials = try await NodeJoiner.join(controllers: [address], token: token, request: Self.agent("web-1"))
            #expect(credentials.identity.role == .agent)
            #expect(try CertificateAuthority.pin(of: credentials.caCertificate) == token.caPinHex)
            // The new certificate opens a mutual-TLS connection; the agent may call what agents may.
            let (host, port) = try #require(HostPort.parse(address))
            let client = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.client(credentials: credentials))
            _ = try await client.unary(Methods.healthCheck, Flotilla_V1_HealthCheckRequest())
            await client.close()
            #expect(try await admin.tokenList().first { $0.id == token.id }?.used == 1)
        }
    }

    @Test("wrong, expired, revoked, used-up and wrong-role tokens are refused, each saying what happened")
    func tokenRefusals() async throws {
        try await Self.withCluster { address, admin in
            let good = try JoinToken(parsing: try await admin.tokenCreate(role: "agent", maxUses: 1).token)
            let wrongSecret = JoinToken(role: .agent, caPin: good.caPin, id: good.id, secret: [UInt8](repeating: 0, count: 16))
            let wrong = await Self.joinError(address, wrongSecret)
            #expect(wrong?.code == .unauthenticated)
            #expect(wrong?.message.contains("wrong secret") == true)

            let unknown = JoinToken(role: .agent, caPin: good.caPin, id: "aaaaaaaa", secret: good.secret)
            #expect(await Self.joinError(address, unknown)?.message.contains("unknown to this cluster") == true)

            #expect(await Self.joinError(address, good) == nil)
            let usedUp = await Self.joinError(address, good)
            #expect(usedUp?.code == .unauthenticated)
            #expect(usedUp?.message.contains("used 1 of 1 times") == true)

            let revoked = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            try await admin.tokenRevoke(id: revoked.id)
            #expect(await Self.joinError(address, revoked)?.message.contains("was revoked") == true)

            let shortLived = try JoinToken(parsing: try await admin.tokenCreate(role: "agent", ttlSeconds: 1).token)
            try await Task.sleep(for: .milliseconds(1_200))
            #expect(await Self.joinError(address, shortLived)?.message.contains("expired") == true)

            // A controller token used by an agent: refused by the leader, not only by the joiner's own check.
            let controllerToken = try JoinToken(parsing: try await admin.tokenCreate(role: "controller").token)
            var request = Flotilla_V1_NodeJoinRequest()
            request.token = controllerToken.text
            request.role = "agent"
            request.csrDer = .init(try Joining.signingRequest(for: P256.Signing.PrivateKey()))
            request.advertiseAddress = "127.0.0.1"
            let error = try #require(await #expect(throws: RPCError.self) { try await Self.rawJoin(address, pin: good.caPin, request) })
            #expect(error.code == .permissionDenied)
            #expect(error.message.contains("admits controllers"))
        }
    }

    @Test("a token from another cluster is refused before anything is sent: the server's CA does not match the pin")
    func wrongCluster() async throws {
        try await Self.withCluster { address, admin in
            let real = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let other = try CertificateAuthority.create(clusterID: "impostor", now: Date())
            let foreign = try JoinToken.generate(role: .agent, caPinHex: other.pin)
            let error = await Self.joinError(address, JoinToken(role: .agent, caPin: foreign.caPin, id: real.id, secret: real.secret))
            #expect(error?.code == .permissionDenied)
            #expect(error?.message.contains("not the cluster your token belongs to") == true)
            #expect(try await admin.tokenList().first { $0.id == real.id }?.used == 0)
        }
    }

    @Test("a CSR carrying someone else's public key is refused: the joiner must prove it holds the key")
    func foreignKeyCSR() async throws {
        try await Self.withCluster { address, admin in
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let mine = try CertificateSigningRequest(derEncoded: try Joining.signingRequest(for: P256.Signing.PrivateKey()))
            let victim = Certificate.PublicKey(P256.Signing.PrivateKey().publicKey)
            let forged = try CertificateSigningRequest(
                version: .v1, subject: mine.subject, publicKey: victim, attributes: mine.attributes,
                signatureAlgorithm: mine.signatureAlgorithm, signature: mine.signature)
            var serializer = DER.Serializer()
            try serializer.serialize(forged)
            var request = Flotilla_V1_NodeJoinRequest()
            request.token = token.text
            request.role = "agent"
            request.csrDer = .init(serializer.serializedBytes)
            request.advertiseAddress = "127.0.0.1"
            let error = try #require(await #expect(throws: RPCError.self) { try await Self.rawJoin(address, pin: token.caPin, request) })
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("not signed by the key"))
            request.csrDer = .init([0x30, 0x03, 0x02, 0x01, 0x00])
            let garbage = try #require(await #expect(throws: RPCError.self) { try await Self.rawJoin(address, pin: token.caPin, request) })
            #expect(garbage.code == .invalidArgument)
            #expect(try await admin.tokenList().first { $0.id == token.id }?.used == 0)
        }
    }

    @Test("a caller without a certificate may call Join and nothing else")
    func joinerIsConfinedToJoin() async throws {
        try await Self.withCluster { address, admin in
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let (host, port) = try #require(HostPort.parse(address))
            let client = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.joiner(), pinnedCA: token.caPin)
            let error = try #require(await #expect(throws: RPCError.self) {
                try await client.unary(Methods.varList, Flotilla_V1_VarListRequest())
            })
            #expect(error.code == .permissionDenied)
            await client.close()
        }
    }

    @Test("a removed node is refused on reconnecting: its session ends for good and every call is denied")
    func removedNodeRefused() async throws {
        try await Self.withCluster { address, admin in
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let credentials = try await NodeJoiner.join(controllers: [address], token: token, request: Self.agent("doomed"))
            let session = AgentSession(
                identity: AgentIdentity(credentials), controllers: [address], directory: nil, logger: Logger(label: "test-agent"))
            let running = Task { try await session.run() }
            #expect(try await eventually { (try? await admin.nodeList())?.first { $0.name == "doomed" }?.status == "ready" })

            // Refused while ready, unless forced.
            let refusal = try #require(await #expect(throws: RPCError.self) { _ = try await admin.nodeRemove("doomed") })
            #expect(refusal.code == .failedPrecondition)
            #expect(try await admin.nodeRemove("doomed", force: true) == credentials.identity.nodeID.rawValue)

            // The session's next heartbeat is refused, and the agent stops: it was removed.
            let ending = await running.result
            guard case .failure(let error) = ending, error is AgentSession.Ending else {
                Issue.record("the session did not end with a removal: \(ending)")
                return
            }
            #expect("\(error)".contains("was removed"))
            // Its certificate is still valid cryptographically, yet every call is denied.
            let (host, port) = try #require(HostPort.parse(address))
            let client = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.client(credentials: credentials))
            let denied = try #require(await #expect(throws: RPCError.self) {
                try await client.unary(Methods.healthCheck, Flotilla_V1_HealthCheckRequest())
            })
            #expect(denied.code == .permissionDenied)
            #expect(denied.message.contains("was removed from the cluster"))
            await client.close()
            #expect(try await admin.nodeList().allSatisfy { $0.name != "doomed" })
        }
    }

    @Test("repeated failed joins from one address are cut off for a while")
    func rateLimited() async throws {
        try await Self.withCluster { address, admin in
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let bad = JoinToken(role: .agent, caPin: token.caPin, id: token.id, secret: [UInt8](repeating: 1, count: 16))
            for _ in 0..<10 { #expect(await Self.joinError(address, bad)?.code == .unauthenticated) }
            let limited = await Self.joinError(address, token)
            #expect(limited?.code == .resourceExhausted)
            #expect(limited?.message.contains("too many failed joins") == true)
        }
    }
}

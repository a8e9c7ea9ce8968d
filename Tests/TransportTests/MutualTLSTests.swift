import ClusterModel
import Foundation
import NIOCore
import NIOSSL
import PKI
import TestSupport
import Testing
@testable import Transport
import Wire

/// Who may connect and who may call what.
@Suite("Mutual TLS and roles")
struct MutualTLSTests {
    let pki: TestPKI

    init() throws {
        pki = try TestPKI()
    }

    /// Connects and makes one call; returns the error, if any.
    func attempt(_ tls: NIOSSLContext, to server: RPCServer) async -> (any Error)? {
        do {
            let client = try await RPCClient.connect(
                host: "127.0.0.1", port: server.localAddress.port!, tls: tls, connectTimeout: .seconds(5))
            do {
                _ = try await client.unary(Methods.healthCheck, Flotilla_V1_HealthCheckRequest(), options: CallOptions(timeout: .seconds(5)))
            } catch {
                await client.close()
                return error
            }
            await client.close()
            return nil
        } catch {
            return error
        }
    }

    /// A client context that trusts `trusting`'s CA but presents `presenting`'s certificate (or none).
    func clientContext(trusting: Credentials, presenting: Credentials?) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: trusting.caCertificateDER, format: .der)])
        if let presenting {
            configuration.certificateChain = [.certificate(try NIOSSLCertificate(bytes: presenting.certificateDER, format: .der))]
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: presenting.privateKeyDER, format: .der))
        }
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    @Test("a server refuses a client whose certificate another CA issued")
    func clientFromAnotherCA() async throws {
        let stranger = try TestPKI(clusterID: "other-cluster")
        try await withTestServer(credentials: pki.controller) { server in
            let error = await attempt(try clientContext(trusting: pki.agent, presenting: stranger.agent), to: server)
            let rpcError = try #require(error as? RPCError)
            #expect(rpcError.code == .unauthenticated)
            #expect(rpcError.message.contains("refused our certificate"))
        }
    }

    @Test("a client refuses a server whose certificate another CA issued")
    func serverFromAnotherCA() async throws {
        let stranger = try TestPKI(clusterID: "other-cluster")
        try await withTestServer(credentials: pki.controller) { server in
            let error = await attempt(try TLSContexts.client(credentials: stranger.agent), to: server)
            let rpcError = try #require(error as? RPCError)
            #expect(rpcError.code == .unauthenticated)
            #expect(rpcError.message.contains("the CA in your credentials did not issue"))
        }
    }

    @Test("a client with no certificate is refused")
    func missingClientCertificate() async throws {
        try await withTestServer(credentials: pki.controller) { server in
            let error = await attempt(try clientContext(trusting: pki.agent, presenting: nil), to: server)
            let rpcError = try #require(error as? RPCError)
            #expect(rpcError.code == .unauthenticated)
            #expect(rpcError.message.contains("refused our certificate"))
        }
    }

    @Test("an expired client certificate is refused")
    func expiredCertificate() async throws {
        let expired = try pki.credentials(
            for: PeerIdentity(nodeID: NodeID("old-agent"), role: .agent),
            now: Date().addingTimeInterval(-7200), validity: .seconds(600))
        try await withTestServer(credentials: pki.controller) { server in
            let error = await attempt(try TLSContexts.client(credentials: expired), to: server)
            let rpcError = try #require(error as? RPCError)
            #expect(rpcError.code == .unauthenticated)
            #expect(rpcError.message.contains("refused our certificate"))
        }
    }

    @Test("a client refuses a server whose certificate has the wrong role")
    func serverWithWrongRole() async throws {
        // An agent's certificate posing as a controller.
        try await withTestServer(credentials: pki.agent) { server in
            let error = await attempt(try TLSContexts.client(credentials: pki.admin), to: server)
            let rpcError = try #require(error as? RPCError)
            #expect(rpcError.code == .permissionDenied)
            #expect(rpcError.message.contains("expected one of: controller"))
        }
    }

    @Test("a method outside the caller's role gets PERMISSION_DENIED naming both roles")
    func wrongRoleForMethod() async throws {
        var router = RPCRouter()
        router.register(Methods.adminStatus) { _, _ in Flotilla_V1_StatusResponse() }
        try await withTestServer(credentials: pki.controller, router: router) { server in
            let agent = try await connectTestClient(to: server, credentials: pki.agent)
            let error = await #expect(throws: RPCError.self) {
                _ = try await agent.unary(Methods.adminStatus, Flotilla_V1_StatusRequest())
            }
            #expect(error?.code == .permissionDenied)
            #expect(error?.message.contains("admin") == true)
            #expect(error?.message.contains("agent agent-1") == true)
            await agent.close()

            let admin = try await connectTestClient(to: server, credentials: pki.admin)
            _ = try await admin.unary(Methods.adminStatus, Flotilla_V1_StatusRequest())
            await admin.close()
        }
    }

    @Test("TLS below 1.2 is refused")
    func oldTLSRefused() async throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: pki.agent.caCertificateDER, format: .der)])
        configuration.certificateChain = [.certificate(try NIOSSLCertificate(bytes: pki.agent.certificateDER, format: .der))]
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: pki.agent.privateKeyDER, format: .der))
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv1
        configuration.maximumTLSVersion = .tlsv11
        let tls = try NIOSSLContext(configuration: configuration)
        try await withTestServer(credentials: pki.controller) { server in
            #expect(await attempt(tls, to: server) != nil)
        }
    }
}

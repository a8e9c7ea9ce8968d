import AdminClient
import Agent
import ClusterModel
import Controller
import Foundation
import Logging
import PKI
import TestSupport
import Testing
import Transport
import Wire

/// Certificates renew themselves while the node runs: with a lifetime of seconds, an agent renews twice while
/// its session with the leader stays on the one connection it opened.
@Suite("Certificate renewal", .serialized)
struct CertificateRenewalTests {
    @Test("an agent renews its certificate in 50-80% of its life, twice, and its long-lived session survives both")
    func agentRenewsWithoutDroppingItsSession() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-renew-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let created = try ControllerDataDirectory(path: root + "/c").initialize(addresses: [], now: Date())
        var configuration = ControllerConfiguration(
            dataDirectory: root + "/c", listenAddress: "127.0.0.1:0", raft: ControllerClusterTests.raftConfiguration())
        let lifetime: Duration = .seconds(4)
        configuration.nodeCertificateLifetime = lifetime
        let server = try await ControllerServer(
            configuration: configuration,
            credentials: try ControllerDataDirectory(path: root + "/c").loadCredentials(addresses: [], now: Date()),
            logger: Logger(label: "test"))
        let running = Task { try await server.run() }
        var tasks: [Task<Void, any Error>] = []
        do {
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            let joined = try await NodeJoiner.join(
                controllers: [server.localAddress], token: token,
                request: .init(role: .agent, name: "renewer", advertiseAddress: "127.0.0.1", version: "test"))
            let identity = AgentIdentity(joined)
            let logger = Logger(label: "test-agent")
            let session = AgentSession(identity: identity, controllers: [server.localAddress], directory: nil, logger: logger)
            let renewer = CertificateRenewer(identity: identity, directory: nil, controllers: { session.controllers }, logger: logger)
            tasks.append(Task { try await session.run() })
            tasks.append(Task { await renewer.run() })

            #expect(try await eventually(timeout: .seconds(20)) { identity.renewalCount >= 2 })
            let renewed = identity.current
            #expect(renewed.identity == joined.identity)
            #expect(renewed.certificate.serialNumber != joined.certificate.serialNumber)
            #expect(renewed.certificate.publicKey != joined.certificate.publicKey, "a renewal brings a new key")
            // The certificate the session's connection was opened with has expired; the connection has not.
            #expect(Date() > joined.certificate.notValidAfter)
            #expect(session.sessionsOpened == 1)
            let beats = session.heartbeatsSent
            #expect(try await eventually(timeout: .seconds(5)) { session.heartbeatsSent > beats })
            #expect(try await admin.nodeList().first { $0.name == "renewer" }?.status == "ready")
            // A new connection made with the renewed certificate is accepted.
            let (host, port) = try #require(HostPort.parse(server.localAddress))
            let fresh = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.client(credentials: renewed))
            _ = try await fresh.unary(Methods.healthCheck, Flotilla_V1_HealthCheckRequest())
            await fresh.close()
            await admin.close()
        } catch {
            for task in tasks { task.cancel() }
            server.beginGracefulShutdown()
            running.cancel()
            throw error
        }
        for task in tasks { task.cancel() }
        for task in tasks { _ = try? await task.value }
        server.beginGracefulShutdown()
        running.cancel()
        _ = try? await running.value
    }

    @Test("a controller renews its own certificate from the cluster CA and serves new connections with it")
    func controllerRenewsItself() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-renew-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = ControllerDataDirectory(path: root)
        let created = try directory.initialize(addresses: [], now: Date())
        // Give the controller a certificate that lives 4 s.
        let original = try directory.loadCredentials(addresses: [], now: Date())
        let shortLived = try Credentials.issue(
            by: try CertificateAuthority.load(from: directory.caPath), identity: original.identity,
            dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], now: Date(), validity: .seconds(4))
        try shortLived.write(to: directory.credentialsPath)
        var configuration = ControllerConfiguration(
            dataDirectory: root, listenAddress: "127.0.0.1:0", raft: ControllerClusterTests.raftConfiguration())
        configuration.nodeCertificateLifetime = .seconds(4)
        let server = try await ControllerServer(configuration: configuration, credentials: shortLived, logger: Logger(label: "test"))
        let running = Task { try await server.run() }
        defer {
            server.beginGracefulShutdown()
            running.cancel()
        }
        let admin = try Credentials.load(from: created.adminCredentialsPath)
        let client = try await AdminClient.connect(to: [server.localAddress], credentials: admin)
        #expect(try await eventually(timeout: .seconds(20)) {
            server.credentials.certificate.serialNumber != shortLived.certificate.serialNumber
        })
        try await Task.sleep(for: .seconds(2))
        #expect(Date() > shortLived.certificate.notValidAfter)
        // The connection opened before the renewal still works; a new one gets the renewed certificate.
        _ = try await client.status()
        let fresh = try await AdminClient.connect(to: [server.localAddress], credentials: admin)
        _ = try await fresh.status()
        // The renewed credentials are on disk for the next start.
        #expect(try Credentials.load(from: directory.credentialsPath).certificate == server.credentials.certificate)
        await fresh.close()
        await client.close()
    }

    @Test("the renewal point falls in 50-80% of the life that follows issuance")
    func renewalWindow() throws {
        let now = Date()
        let ca = try CertificateAuthority.create(clusterID: "c", now: now)
        let credentials = try Credentials.issue(
            by: ca, identity: PeerIdentity(nodeID: NodeID("n"), role: .agent), now: now, validity: .seconds(1000))
        for _ in 0..<100 {
            let due = CertificateRenewal.renewalDate(for: credentials.certificate).timeIntervalSince(now)
            #expect(due >= 499 && due <= 801, "due after \(due) s")
        }
    }
}

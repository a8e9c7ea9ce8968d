import AdminClient
import ClusterModel
import Controller
import Foundation
import Logging
import PKI
import TestSupport
import Testing
import Wire

@Suite("Controller data directory and admin status")
struct ControllerServerTests {
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("--init creates the CA, controller and admin credentials with mode 0600, and refuses to run twice")
    func initialize() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = ControllerDataDirectory(path: root + "/data")
        let created = try directory.initialize(addresses: ["127.0.0.1:7400"], now: Date())
        for path in [directory.caPath, directory.credentialsPath, directory.adminCredentialsPath] {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(path)")
        }
        let admin = try Credentials.load(from: created.adminCredentialsPath)
        #expect(admin.identity.role == .admin)
        #expect(admin.clusterID == created.clusterID)
        let controller = try directory.loadCredentials(addresses: [], now: Date())
        #expect(controller.identity == PeerIdentity(nodeID: created.controllerID, role: .controller))

        #expect {
            _ = try directory.initialize(addresses: [], now: Date())
        } throws: { error in
            "\(error)".contains("already holds a Flotilla controller")
        }
    }

    @Test("starting without --init on an empty directory says to pass --init")
    func notInitialized() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect {
            _ = try ControllerDataDirectory(path: root).loadCredentials(addresses: [], now: Date())
        } throws: { error in
            "\(error)".contains("pass --init")
        }
    }

    @Test("a controller re-issues its own certificate once half its lifetime has passed")
    func selfRenewal() throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = ControllerDataDirectory(path: root)
        let start = Date()
        _ = try directory.initialize(addresses: [], now: start)
        let original = try directory.loadCredentials(addresses: [], now: start)
        let later = start.addingTimeInterval(20 * 86_400)
        let renewed = try directory.loadCredentials(addresses: [], now: later)
        #expect(renewed.identity == original.identity)
        #expect(renewed.certificate.notValidAfter > original.certificate.notValidAfter)
    }

    @Test("the admin status call reports the controller's id, version and uptime")
    func status() async throws {
        let root = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = ControllerDataDirectory(path: root)
        let created = try directory.initialize(addresses: [], now: Date())
        let server = try await ControllerServer(
            configuration: ControllerConfiguration(dataDirectory: root, listenAddress: "127.0.0.1:0"),
            credentials: try directory.loadCredentials(addresses: [], now: Date()),
            logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let admin = try Credentials.load(from: created.adminCredentialsPath)
            let client = try await AdminClient.connect(to: [server.localAddress], credentials: admin)
            let status = try await client.status()
            #expect(status.controllerID == created.controllerID.rawValue)
            #expect(status.clusterID == created.clusterID)
            #expect(status.version == FlotillaVersion.current)
            #expect(status.uptimeSeconds >= 0 && status.uptimeSeconds < 60)
            await client.close()
            server.beginGracefulShutdown()
            try await group.waitForAll()
        }
    }

    @Test("an admin client lists every address it tried when none answers")
    func unreachable() async throws {
        let pki = try TestPKI()
        let error = await #expect(throws: RPCError.self) {
            _ = try await AdminClient.connect(to: ["127.0.0.1:1", "127.0.0.1:2"], credentials: pki.admin, timeout: .seconds(2))
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("127.0.0.1:1") == true)
        #expect(error?.message.contains("127.0.0.1:2") == true)
    }
}

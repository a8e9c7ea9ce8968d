import AdminClient
import ClusterModel
import Controller
import Foundation
import Logging
import PKI
import RaftRuntime
import TestSupport
import Testing
import Transport
import Wire

/// Three controllers in one process on loopback: founding, joining, replication, leader loss, restart.
@Suite("Controller cluster on loopback", .serialized)
struct ControllerClusterTests {
    static func raftConfiguration() -> RaftDriverConfiguration {
        var raft = RaftDriverConfiguration()
        raft.tickInterval = .milliseconds(20)
        return raft
    }

    /// A running controller and the task that runs it.
    struct Running {
        let server: ControllerServer
        let task: Task<Void, any Error>
    }

    static func start(_ directory: String, join: [String] = []) async throws -> Running {
        let data = ControllerDataDirectory(path: directory)
        let server = try await ControllerServer(
            configuration: ControllerConfiguration(
                dataDirectory: directory, listenAddress: "127.0.0.1:0", joinAddresses: join, raft: raftConfiguration()),
            credentials: try data.loadCredentials(addresses: [], now: Date()), logger: Logger(label: "test"))
        // A test-owned task per controller so one can be stopped while the others run; always awaited below.
        let task = Task { try await server.run() }
        return Running(server: server, task: task)
    }

    static func stop(_ running: Running) async {
        running.server.beginGracefulShutdown()
        running.task.cancel()
        _ = try? await running.task.value
    }

    static func put(_ key: String, _ value: String, via address: String, admin: Credentials) async throws -> UInt64 {
        let (host, port) = HostPort.parse(address)!
        let client = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.client(credentials: admin))
        var request = Flotilla_V1_VarPutRequest()
        request.key = key
        request.value = Data(value.utf8)
        do {
            let index = try await client.unary(Methods.varPut, request, options: CallOptions(timeout: .seconds(5))).index
            await client.close()
            return index
        } catch {
            await client.close()
            throw error
        }
    }

    static func staleValue(_ key: String, on address: String, admin: Credentials) async -> String? {
        guard let (host, port) = HostPort.parse(address),
              let client = try? await RPCClient.connect(host: host, port: port, tls: try TLSContexts.client(credentials: admin))
        else { return nil }
        var request = Flotilla_V1_VarGetRequest()
        request.key = key
        request.stale = true
        let value = try? await client.unary(Methods.varGet, request, options: CallOptions(timeout: .seconds(2)))
        await client.close()
        return value.map { String(decoding: $0.variable.value, as: UTF8.self) }
    }

    static func leader(_ servers: [Running]) async -> Running? {
        for running in servers where await running.server.raftStatus.role == .leader { return running }
        return nil
    }

    /// A founder (at `root`/a, the first leader) and two controllers joined with a controller token (at `root`/b
    /// and /c), once all three are voters; and the admin credentials.
    static func startThree(_ root: String) async throws -> ([Running], Credentials) {
        let created = try ControllerDataDirectory(path: root + "/a").initialize(addresses: [], now: Date())
        let admin = try Credentials.load(from: created.adminCredentialsPath)
        let a = try await start(root + "/a")
        do {
            #expect(try await eventually(timeout: .seconds(30)) { await a.server.raftStatus.role == .leader })
            // The joiners get their certificates with a controller token, as `flotilla-controller --join --token` does.
            let adminClient = try await AdminClient.connect(to: [a.server.localAddress], credentials: admin)
            let token = try JoinToken(parsing: try await adminClient.tokenCreate(role: "controller", maxUses: 2).token)
            await adminClient.close()
            for name in ["b", "c"] {
                let credentials = try await NodeJoiner.join(
                    controllers: [a.server.localAddress], token: token, request: .init(role: .controller, advertiseAddress: "127.0.0.1:1", version: "test"))
                try ControllerDataDirectory(path: root + "/" + name).adoptJoinCredentials(credentials)
            }
        } catch {
            await stop(a)
            throw error
        }
        var all = [a]
        do {
            all.append(try await start(root + "/b", join: [a.server.localAddress]))
            all.append(try await start(root + "/c", join: [a.server.localAddress]))
            let formed = try await eventually(timeout: .seconds(20)) { await a.server.raftStatus.configuration.voters.count == 3 }
            let configuration = await a.server.raftStatus.configuration
            #expect(formed, "configuration: \(configuration)")
            return (all, admin)
        } catch {
            for running in all { await stop(running) }
            throw error
        }
    }

    @Test("a founder and two joiners form a 3-voter cluster that replicates writes and survives its leader")
    func threeControllers() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-ctl-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let started = try await Self.startThree(root)
        var all = started.0
        let admin = started.1
        var a = all[0]
        let (b, c) = (all[1], all[2])
        do {
            for i in 0..<20 { _ = try await Self.put("k\(i)", "v\(i)", via: a.server.localAddress, admin: admin) }
            for running in [b, c] {
                let address = running.server.localAddress
                #expect(try await eventually { await Self.staleValue("k19", on: address, admin: admin) == "v19" })
            }

            // The leader goes away: the other two elect a new one and keep taking writes.
            await Self.stop(a)
            let survivors = [b, c]
            #expect(try await eventually(timeout: .seconds(30)) { await Self.leader(survivors) != nil })
            let newLeader = try #require(await Self.leader(survivors))
            for i in 20..<30 { _ = try await Self.put("k\(i)", "v\(i)", via: newLeader.server.localAddress, admin: admin) }
            // The new leader joined with a token and never had the CA file: it signs with the replicated CA.
            #expect(!FileManager.default.fileExists(atPath: root + "/b/ca.pem"))
            let leaderClient = try await AdminClient.connect(to: [newLeader.server.localAddress], credentials: admin)
            let agentToken = try JoinToken(parsing: try await leaderClient.tokenCreate(role: "agent").token)
            await leaderClient.close()
            let agent = try await NodeJoiner.join(
                controllers: [newLeader.server.localAddress], token: agentToken,
                request: .init(role: .agent, name: "after-failover", advertiseAddress: "127.0.0.1", version: "test"))
            #expect(agent.caCertificate == admin.caCertificate)

            // The old leader restarts from its data directory and catches up on what it missed.
            a = try await Self.start(root + "/a")
            all = [a, b, c]
            let address = a.server.localAddress
            #expect(try await eventually(timeout: .seconds(20)) { await Self.staleValue("k29", on: address, admin: admin) == "v29" })
            for i in 0..<30 {
                #expect(await Self.staleValue("k\(i)", on: address, admin: admin) == "v\(i)")
            }
        } catch {
            for running in all { await Self.stop(running) }
            throw error
        }
        for running in all { await Self.stop(running) }
    }

    @Test("a backup restores onto a fresh controller: same CA, same variables, and it takes new writes")
    func backupAndRestore() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-backup-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let created = try ControllerDataDirectory(path: root + "/a").initialize(addresses: [], now: Date())
        let admin = try Credentials.load(from: created.adminCredentialsPath)
        let a = try await Self.start(root + "/a")
        let backup: [UInt8]
        do {
            #expect(try await eventually(timeout: .seconds(30)) { await a.server.raftStatus.role == .leader })
            for i in 0..<10 { _ = try await Self.put("b\(i)", "v\(i)", via: a.server.localAddress, admin: admin) }
            let client = try await AdminClient.connect(to: [a.server.localAddress], credentials: admin)
            backup = try await client.snapshotSave()
            await client.close()
        } catch {
            await Self.stop(a)
            throw error
        }
        await Self.stop(a)
        let backupPath = root + "/backup.flotilla"
        try Data(backup).write(to: URL(fileURLWithPath: backupPath))

        let restored = try ControllerDataDirectory(path: root + "/r").restore(from: backupPath, addresses: [], now: Date())
        #expect(restored.clusterID == created.clusterID)
        let r = try await Self.start(root + "/r")
        do {
            #expect(try await eventually(timeout: .seconds(30)) { await r.server.raftStatus.role == .leader })
            // Credentials from before the backup still work (same CA), and the state is all there.
            for i in 0..<10 {
                #expect(await Self.staleValue("b\(i)", on: r.server.localAddress, admin: admin) == "v\(i)")
            }
            let index = try await Self.put("after", "restore", via: r.server.localAddress, admin: admin)
            #expect(index > 10)
            #expect(await r.server.raftStatus.configuration.voters.count == 1)
        } catch {
            await Self.stop(r)
            throw error
        }
        await Self.stop(r)
    }
}

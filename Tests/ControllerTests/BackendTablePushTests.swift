import AdminClient
import Agent
import Balancing
import Controller
import Foundation
import Messages
import PKI
import TestSupport
import Testing

/// What a node's load balancer would be handed: every change of the agent's backend tables, in order.
actor TableRecorder: BackendTableReceiver {
    private(set) var changes: [TableSetChange] = []
    private(set) var latest = ServiceTableSet()

    func apply(_ change: TableSetChange, set: ServiceTableSet) {
        changes.append(change)
        latest = set
    }
}

/// The leader's backend tables reaching real agent sessions in one process: the complete set when a session
/// opens, then each change; agents keep their tables when the controller is gone.
@Suite("Backend tables pushed to agents", .serialized)
struct BackendTablePushTests {
    static func table(_ session: AgentSession, _ name: String) -> ServiceTable? {
        session.serviceTables.table(named: name)
    }

    @Test("an agent gets the complete set, then each change (a task ready, a scale-up), and keeps its tables when the controller goes away")
    func pushAndKeep() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-tables")
        let created = try ControllerDataDirectory(path: work.path + "/controller").initialize(addresses: [], now: Date())
        let running = try await ControllerClusterTests.start(work.path + "/controller")
        var agents = InProcessAgents()
        var late = InProcessAgents()
        let recorders = ["n1": TableRecorder(), "n2": TableRecorder(), "n3": TableRecorder()]
        var controllerStopped = false
        do {
            let server = running.server
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            agents = try await InProcessAgents.start(["n1", "n2"], controllers: [server.localAddress], admin: admin, tables: { recorders[$0] })
            let sessions = agents.agentSessions
            #expect(try await eventually { (try? await admin.nodeList())?.filter { $0.status == "ready" }.count == 2 })

            // Tasks that run but are not ready until the file exists.
            let readyFile = work.path + "/ready"
            var spec = Flotilla_V1_ServiceSpec.process("web", command: "exec sleep 600", replicas: 2, monitorMs: 0)
            var port = Flotilla_V1_PortSpec()
            port.targetPort = 8000
            port.publishedPort = 18080
            spec.ports = [port]
            spec.lbPolicy = "least-connections"
            spec.readinessCheck.command = ["/bin/sh", "-c", "test -e \(readyFile)"]
            spec.readinessCheck.intervalMs = 200
            spec.readinessCheck.timeoutMs = 150
            let service = try await admin.serviceCreate(spec)
            #expect(service.virtualIp == "10.96.0.1")

            // Every agent gets the table (the routing mesh: any node serves any published port), with no backends.
            #expect(try await eventually(timeout: .seconds(20)) {
                let running = ((try? await admin.serviceInspect("web").tasks) ?? []).filter { $0.state == .running }.count
                return running == 2 && sessions.allSatisfy { Self.table($0, "web")?.backends.isEmpty == true }
            })
            let empty = try #require(Self.table(sessions[0], "web"))
            #expect(empty.virtualIP == "10.96.0.1")
            #expect(empty.policy == .leastConnections && empty.mode == .tcp)
            #expect(empty.ports == [.init(published: 18080, target: 8000, mode: .tcp)])

            // The tasks become ready: the table changes, at a newer version, on every agent.
            #expect(FileManager.default.createFile(atPath: readyFile, contents: Data()))
            #expect(try await eventually(timeout: .seconds(20)) {
                sessions.allSatisfy { Self.table($0, "web")?.backends.count == 2 }
            })
            let ready = try #require(Self.table(sessions[0], "web"))
            #expect(ready.version > empty.version)
            #expect(ready.backends.allSatisfy { $0.weight == 1 && $0.host == "127.0.0.1" && $0.port > 0 })
            let nodes = Set(ready.backends.map(\.node))
            #expect(ready.backends.filter(\.isLocal).allSatisfy { $0.node == ready.backends.first(where: \.isLocal)?.node })
            print("web's tasks run on \(nodes.count) node(s); n1 sees \(ready.backends.filter(\.isLocal).count) of them as local")
            let n1Changes = await recorders["n1"]!.changes
            #expect(n1Changes.first == TableSetChange(added: [service.id]), "the table arrived, then changed")
            #expect(n1Changes.dropFirst().allSatisfy { $0 == TableSetChange(changed: [service.id]) })
            print("n1 received \(n1Changes.count) table changes up to two ready backends")

            // A session opened now starts with the complete set: the same table, at the same version.
            late = try await InProcessAgents.start(["n3"], controllers: [server.localAddress], admin: admin, tables: { recorders[$0] })
            let n3 = recorders["n3"]!
            #expect(try await eventually { await n3.latest.table(named: "web")?.backends.count == 2 })
            let n3First = await recorders["n3"]!.changes.first
            #expect(n3First == TableSetChange(added: [service.id]))
            #expect(Self.table(late.agentSessions[0], "web")?.version == Self.table(sessions[0], "web")?.version)
            #expect(Self.table(late.agentSessions[0], "web")?.backends.map(\.id) == ready.backends.map(\.id))

            // Scaled up: the new task joins every agent's table once it is ready.
            var scaled = try await admin.serviceInspect("web").service.spec
            scaled.replicas = 3
            _ = try await admin.serviceUpdate(scaled)
            let everyone = sessions + late.agentSessions
            #expect(try await eventually(timeout: .seconds(20)) {
                everyone.allSatisfy { Self.table($0, "web")?.backends.filter { $0.weight > 0 }.count == 3 }
            })
            let three = try #require(Self.table(sessions[0], "web"))
            #expect(three.version > ready.version)
            await admin.close()

            // The controller goes away: the agents lose their sessions but keep serving the last tables.
            await ControllerClusterTests.stop(running)
            controllerStopped = true
            #expect(try await eventually(timeout: .seconds(20)) { everyone.allSatisfy { $0.connectedTo == nil } })
            for session in everyone {
                let kept = Self.table(session, "web")
                #expect(kept?.version == three.version)
                #expect(kept?.backends.map(\.id) == three.backends.map(\.id))
            }
            for recorder in recorders.values {
                let removals = await recorder.changes.filter { !$0.removed.isEmpty }
                #expect(removals.isEmpty, "nothing was removed")
            }
        } catch {
            await late.stop()
            await agents.stop()
            if !controllerStopped { await ControllerClusterTests.stop(running) }
            throw error
        }
        await late.stop()
        await agents.stop()
    }
}

import AdminClient
import Agent
import ClusterModel
import Controller
import Foundation
import Logging
import Messages
import PKI
import TestSupport
import Testing
import Transport
import Wire

/// The leader's orchestration loop against real agent sessions, in one process: a service's tasks are placed
/// on ready nodes, and when a node's agent goes silent its tasks are replaced on the others.
/// (Agents do not run tasks yet — the worker comes next — so tasks here reach `assigned`.)
@Suite("Service orchestration on a live controller", .serialized)
struct ServiceOrchestrationTests {
    @Test("tasks are placed on ready nodes; a silent node's tasks are replaced elsewhere")
    func nodeLossReschedules() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-orch-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let created = try ControllerDataDirectory(path: root).initialize(addresses: [], now: Date())
        let running = try await ControllerClusterTests.start(root)
        var sessions: [Task<Void, any Error>] = []
        do {
            let server = running.server
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent").token)
            for name in ["n1", "n2"] {
                let credentials = try await NodeJoiner.join(
                    controllers: [server.localAddress], token: token,
                    request: .init(role: .agent, name: name, advertiseAddress: "127.0.0.1", version: "test"))
                let session = AgentSession(identity: AgentIdentity(credentials), controllers: [server.localAddress], directory: nil, logger: Logger(label: name))
                sessions.append(Task { try await session.run() })
            }
            #expect(try await eventually { (try? await admin.nodeList())?.filter { $0.status == "ready" }.count == 2 })

            var spec = Flotilla_V1_ServiceSpec()
            spec.name = "web"
            spec.driver = "process"
            spec.command = "python3 -m http.server $PORT"
            spec.replicas = 4
            let service = try await admin.serviceCreate(spec)
            #expect(service.version == 1)
            #expect(try await eventually {
                let tasks = (try? await admin.serviceInspect("web").tasks) ?? []
                return tasks.filter { $0.desiredState == .running && $0.state == .assigned }.count == 4
            })
            let placed = try await admin.serviceInspect("web")
            #expect(Set(placed.tasks.map(\.nodeID)).count == 2, "spread over both nodes")

            // n1's agent goes silent.
            let n1 = try #require(try await admin.nodeList().first { $0.name == "n1" }).id
            let silencedAt = ContinuousClock.now
            sessions[0].cancel()
            #expect(try await eventually(timeout: .seconds(15)) {
                let tasks = (try? await admin.serviceInspect("web").tasks) ?? []
                let live = tasks.filter { $0.desiredState == .running }
                return live.count == 4 && live.allSatisfy { $0.nodeID != n1 && $0.state == .assigned }
            })
            // Measured, not asserted (tests hold no timing targets; the machine is shared and noisy).
            let replaced = ContinuousClock.now - silencedAt
            print("agent silent -> its tasks replaced on other nodes after \(replaced)")
            let after = try await admin.serviceInspect("web")
            #expect(after.tasks.filter { $0.nodeID == n1 }.allSatisfy { $0.state == .orphaned && $0.desiredState == .shutdown })

            // Scale down and remove through the admin API.
            var scaled = after.service.spec
            scaled.replicas = 1
            #expect(try await admin.serviceUpdate(scaled).version == 2)
            #expect(try await eventually { ((try? await admin.serviceInspect("web").tasks) ?? []).filter { $0.desiredState == .running }.count == 1 })
            _ = try await admin.serviceRemove("web")
            #expect(try await eventually { (try? await admin.serviceList())?.isEmpty == true })
            await admin.close()
        } catch {
            for session in sessions { session.cancel() }
            await ControllerClusterTests.stop(running)
            throw error
        }
        for session in sessions { session.cancel() }
        await ControllerClusterTests.stop(running)
    }

    @Test("agents run a process-driver service; a killed node's tasks run again elsewhere; updates and removal reach the processes")
    func processDriverEndToEnd() async throws {
        let root = try TemporaryDirectory(prefix: "flotilla-orch")
        try await InProcessAgents.withCluster(root.path, agents: ["n1", "n2"]) { admin, agents in
            let workers = agents.workers
            #expect(try await eventually { (try? await admin.nodeList())?.filter { $0.status == "ready" }.count == 2 })

            let spec = Flotilla_V1_ServiceSpec.process("sleeper", command: "exec sleep 300", replicas: 4, monitorMs: 500)
            _ = try await admin.serviceCreate(spec)
            @Sendable func live() async -> [Flotilla_V1_TaskRecord] {
                ((try? await admin.serviceInspect("sleeper").tasks) ?? []).filter { $0.desiredState == .running }
            }
            #expect(try await eventually(timeout: .seconds(20)) {
                let tasks = await live()
                return tasks.count == 4 && tasks.allSatisfy { $0.state == .running }
            })
            let n1 = try #require(try await admin.nodeList().first { $0.name == "n1" }).id
            #expect(await workers[0].runningTaskIDs.count + workers[1].runningTaskIDs.count == 4)

            // n1's agent dies (its session stops; its processes are left to the test to clean up).
            let killedAt = ContinuousClock.now
            agents.sessions[0].cancel()
            #expect(try await eventually(timeout: .seconds(15)) {
                let tasks = await live()
                return tasks.count == 4 && tasks.allSatisfy { $0.nodeID != n1 && $0.state == .running }
            })
            // Measured, not asserted (tests hold no timing targets; the machine is shared and noisy).
            let recovered = ContinuousClock.now - killedAt
            print("node lost -> service back at full count, running, after \(recovered)")
            #expect(await workers[1].runningTaskIDs.count == 4)

            // A rolling update replaces every task with the new command.
            var updated = try await admin.serviceInspect("sleeper").service.spec
            updated.command = "exec sleep 301"
            _ = try await admin.serviceUpdate(updated)
            #expect(try await eventually(timeout: .seconds(30)) {
                let inspected = try? await admin.serviceInspect("sleeper")
                return inspected?.service.updateStatus.state == "completed"
                    && (inspected?.tasks.filter { $0.desiredState == .running && $0.state == .running }.count ?? 0) == 4
            })
            // Removal stops the processes.
            _ = try await admin.serviceRemove("sleeper")
            let worker = workers[1]
            #expect(try await eventually(timeout: .seconds(20)) { await worker.runningTaskIDs.isEmpty })
        }
    }

    @Test("an invalid spec is refused with every bad field named")
    func invalidSpec() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-orch-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let created = try ControllerDataDirectory(path: root).initialize(addresses: [], now: Date())
        let running = try await ControllerClusterTests.start(root)
        let server = running.server
        #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
        let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = "Bad Name"
        spec.driver = "process"
        var port = Flotilla_V1_PortSpec()
        port.targetPort = 70_000
        spec.ports = [port]
        let error = try #require(await #expect(throws: RPCError.self) { _ = try await admin.serviceCreate(spec) })
        #expect(error.code == .invalidArgument)
        for field in ["name:", "command:", "ports[0].target_port:"] { #expect(error.message.contains(field), "\(error.message)") }
        await admin.close()
        await ControllerClusterTests.stop(running)
    }
}

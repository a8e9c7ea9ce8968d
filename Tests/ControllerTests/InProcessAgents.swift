import AdminClient
import Agent
import Controller
import Foundation
import Testing
import TestSupport
import ClusterModel
import ContainerRuntime
import Logging
import Messages
import PKI
import Transport

/// Agents in the test's process: each joins with a token, runs its session (following the leader among
/// `controllers`) and a `TaskWorker` that runs process-driver tasks on this host.
struct InProcessAgents {
    var names: [String] = []
    var sessions: [Task<Void, any Error>] = []
    /// Each agent's session (its backend tables, whom it is connected to).
    var agentSessions: [AgentSession] = []
    var workers: [TaskWorker] = []
    /// The OCI drivers' container networks (bridges, routes, firewall tables), torn down at the end.
    var networks: [ContainerNetwork] = []
    var logs: [TaskLogs] = []

    /// Joins one agent per name through `admin`'s cluster and starts its session; `runtimes` gives each agent's
    /// worker its drivers beside the process driver (by node name and id). With `logs`, each agent captures its
    /// tasks' output under `logs/<name>` and answers log subscriptions. `tables` gives each agent's session a
    /// receiver of its backend tables, `balancerStats` what it reports of its load balancer.
    static func start(
        _ names: [String], controllers: [String], admin: AdminClient, logs logsRoot: String? = nil,
        runtimes: (_ name: String, _ nodeID: String) throws -> [any ContainerRuntime] = { _, _ in [] },
        tables: (_ name: String) -> (any BackendTableReceiver)? = { _ in nil },
        balancerStats: (_ name: String) -> (any BalancerStatsSource)? = { _ in nil }
    ) async throws -> InProcessAgents {
        var agents = InProcessAgents()
        let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent", maxUses: UInt32(names.count)).token)
        for name in names {
            let credentials = try await NodeJoiner.join(
                controllers: controllers, token: token,
                request: .init(role: .agent, name: name, advertiseAddress: "127.0.0.1", version: "test"))
            let logger = Logger(label: name)
            let logs = try logsRoot.map { try TaskLogs(configuration: TaskLogConfiguration(directory: $0 + "/" + name), logger: logger) }
            let drivers = try runtimes(name, credentials.identity.nodeID.rawValue)
            let networks = drivers.compactMap { ($0 as? OCIDriver)?.networking }
            let worker = TaskWorker(logger: Logger(label: name), runtimes: drivers, onNetwork: { update in
                for network in networks { try? await network.configure(update) }
            }, logs: logs)
            agents.networks += networks
            let session = AgentSession(
                identity: AgentIdentity(credentials), controllers: controllers, directory: nil, worker: worker,
                logs: logs.map { LogPublisher(logs: $0, logger: logger) }, tables: tables(name),
                balancerStats: balancerStats(name), logger: logger)
            if let logs { agents.logs.append(logs) }
            agents.names.append(name)
            agents.agentSessions.append(session)
            agents.workers.append(worker)
            agents.sessions.append(Task { try await session.run() })
        }
        return agents
    }

    /// One controller initialised in `directory` and agents `names` joined to it: runs `body` with an admin
    /// client and the agents, then stops the agents (tearing their networks down) and the controller, also when
    /// `body` throws.
    static func withCluster(
        _ directory: String, agents names: [String],
        runtimes: (_ name: String, _ nodeID: String) throws -> [any ContainerRuntime] = { _, _ in [] },
        _ body: (AdminClient, InProcessAgents) async throws -> Void
    ) async throws {
        let created = try ControllerDataDirectory(path: directory).initialize(addresses: [], now: Date())
        let running = try await ControllerClusterTests.start(directory)
        var agents = InProcessAgents()
        do {
            let server = running.server
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            agents = try await InProcessAgents.start(names, controllers: [server.localAddress], admin: admin, runtimes: runtimes)
            try await body(admin, agents)
            await admin.close()
        } catch {
            await agents.stop()
            await ControllerClusterTests.stop(running)
            throw error
        }
        await agents.stop()
        await ControllerClusterTests.stop(running)
    }

    /// Processes running on every agent.
    func runningCount() async -> Int {
        var total = 0
        for worker in workers { total += await worker.runningTaskIDs.count }
        return total
    }

    /// Ends every session and stops every task the workers started.
    func stop() async {
        for session in sessions { session.cancel() }
        for worker in workers { await worker.stopAll() }
        for network in networks { await network.tearDown() }
        for logs in logs { await logs.shutdown() }
    }
}

extension Flotilla_V1_ServiceSpec {
    /// A replicated process-driver service running `command`, watched `monitorMs` after each update.
    static func process(_ name: String, command: String, replicas: UInt32, monitorMs: UInt32) -> Flotilla_V1_ServiceSpec {
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = name
        spec.driver = "process"
        spec.command = command
        spec.replicas = replicas
        spec.updateConfig.monitorMs = monitorMs
        return spec
    }
}

import AdminClient
import Agent
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
    var workers: [TaskWorker] = []
    var logs: [TaskLogs] = []

    /// Joins one agent per name through `admin`'s cluster and starts its session; `runtimes` gives each agent's
    /// worker its drivers beside the process driver (by node name and id). With `logs`, each agent captures its
    /// tasks' output under `logs/<name>` and answers log subscriptions.
    static func start(
        _ names: [String], controllers: [String], admin: AdminClient, logs logsRoot: String? = nil,
        runtimes: (_ name: String, _ nodeID: String) throws -> [any ContainerRuntime] = { _, _ in [] }
    ) async throws -> InProcessAgents {
        var agents = InProcessAgents()
        let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent", maxUses: UInt32(names.count)).token)
        for name in names {
            let credentials = try await NodeJoiner.join(
                controllers: controllers, token: token,
                request: .init(role: .agent, name: name, advertiseAddress: "127.0.0.1", version: "test"))
            let logger = Logger(label: name)
            let logs = try logsRoot.map { try TaskLogs(configuration: TaskLogConfiguration(directory: $0 + "/" + name), logger: logger) }
            let worker = TaskWorker(logger: Logger(label: name), runtimes: try runtimes(name, credentials.identity.nodeID.rawValue), logs: logs)
            let session = AgentSession(
                identity: AgentIdentity(credentials), controllers: controllers, directory: nil, worker: worker,
                logs: logs.map { LogPublisher(logs: $0, logger: logger) }, logger: logger)
            if let logs { agents.logs.append(logs) }
            agents.names.append(name)
            agents.workers.append(worker)
            agents.sessions.append(Task { try await session.run() })
        }
        return agents
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

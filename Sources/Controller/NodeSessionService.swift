import ClusterModel
import ClusterStore
import Foundation
import Logging
import Orchestrator
import RaftRuntime
import Synchronization
import Transport
import Wire

/// The leader's side of agent sessions: heartbeats in, node status (`ready`/`down`) out through Raft.
///
/// The decisions are `NodeLiveness`'s (pure, in Orchestrator); this shell feeds it heartbeats and the time,
/// follows leadership, and proposes what it decides.
final class NodeMonitor: Sendable {
    let raft: ControllerRaft
    let logger: Logger
    private let liveness: Mutex<NodeLiveness>
    /// Wall-clock time of each node's last heartbeat (for `node ls`), this reign only.
    private let lastHeardWall = Mutex<[NodeID: UInt64]>([:])
    private let origin = ContinuousClock.now

    init(raft: ControllerRaft, heartbeatPeriod: Duration, logger: Logger) {
        self.raft = raft
        self.logger = logger
        self.liveness = Mutex(NodeLiveness(heartbeatPeriod: heartbeatPeriod))
    }

    var heartbeatPeriod: Duration { liveness.withLock { $0.heartbeatPeriod } }

    private var now: Duration { ContinuousClock.now - origin }

    func heartbeat(from node: NodeID) {
        let at = now
        liveness.withLock { $0.heartbeat(from: node, at: at) }
        lastHeardWall.withLock { $0[node] = UInt64(Date().timeIntervalSince1970 * 1000) }
    }

    /// Unix milliseconds of the node's last heartbeat to this leader; nil when none.
    func lastHeartbeatMs(of node: NodeID) -> UInt64? { lastHeardWall.withLock { $0[node] } }

    /// Follows leadership and commits status changes, until cancelled.
    func run() async {
        let tick = max(.milliseconds(20), heartbeatPeriod / 10)
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            let status = await raft.driver.status
            let at = now
            let leading = status.role == .leader
            let changes: [(node: NodeID, status: NodeRecord.Status)] = liveness.withLock { liveness in
                if leading && !liveness.isLeading { liveness.becameLeader(at: at) }
                if !leading && liveness.isLeading { liveness.lostLeadership() }
                return liveness.changes(for: raft.store.read { $0.nodes }, at: at)
            }
            if !leading { lastHeardWall.withLock { $0 = [:] } }
            for change in changes {
                guard var record = raft.store.read({ $0.node(change.node) }), record.status != change.status else { continue }
                record.status = change.status
                record.statusChangedAtMs = UInt64(Date().timeIntervalSince1970 * 1000)
                do {
                    _ = try await raft.propose(ClusterCommands.nodeUpsert(record))
                    logger.info("node status changed", metadata: ["node.id": "\(record.id)", "node.name": "\(record.name)", "status": "\(change.status.rawValue)"])
                } catch {
                    logger.debug("node status change not committed", metadata: ["node.id": "\(record.id)", "error": "\(error)"])
                }
            }
        }
    }
}

/// Serves `NodeMembership/Session` to agents.
struct NodeSessionService: Sendable {
    let raft: ControllerRaft
    let monitor: NodeMonitor
    let logger: Logger

    func register(into router: inout RPCRouter) {
        router.register(Methods.agentSession) { heartbeats, writer, context in
            try await session(node: context.peer.nodeID, heartbeats: heartbeats, writer: writer)
        }
    }

    func session(
        node: NodeID, heartbeats: RequestStream<Flotilla_V1_AgentHeartbeat>, writer: ResponseWriter<Flotilla_V1_SessionUpdate>
    ) async throws {
        try await requireLeader()
        guard raft.store.read({ $0.node(node) }) != nil else {
            throw RPCError(.permissionDenied, "node \(node) is not in this cluster (it was removed); join it again with a new token and an empty --data-dir")
        }
        monitor.heartbeat(from: node)
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The dispatcher: the node's complete assignment set first, then again whenever it changes.
            group.addTask { try await dispatch(to: node, writer: writer) }
            for try await heartbeat in heartbeats {
                // A controller that lost the leadership sends its agents to the new leader.
                try await requireLeader()
                guard raft.store.read({ $0.node(node) }) != nil else {
                    throw RPCError(.permissionDenied, "node \(node) was removed from the cluster")
                }
                monitor.heartbeat(from: node)
                if !heartbeat.statuses.isEmpty {
                    _ = try await raft.propose(ClusterCommands.taskStatusReport(nodeID: node, heartbeat.statuses))
                }
            }
            group.cancelAll()
        }
    }

    /// Sends `node`'s assignments: the complete set at the start of the session and after every change to it.
    private func dispatch(to node: NodeID, writer: ResponseWriter<Flotilla_V1_SessionUpdate>) async throws {
        let watch = raft.store.watch.subscribe()
        var generation: UInt64 = 0
        var lastSent: [Flotilla_V1_TaskAssignment]?
        var pending = true  // the first set goes out at once
        var iterator = watch.makeAsyncIterator()
        while !Task.isCancelled {
            if pending {
                let assignments = Self.assignments(for: node, in: raft.store.read { $0 })
                if assignments != lastSent || generation == 0 {
                    generation += 1
                    var update = Flotilla_V1_SessionUpdate()
                    if generation == 1 {
                        update.heartbeatPeriodMs = UInt32(monitor.heartbeatPeriod.components.seconds * 1000
                            + monitor.heartbeatPeriod.components.attoseconds / 1_000_000_000_000_000)
                        update.controllers = raft.store.read { $0.controllers.map(\.address) }
                    }
                    update.assignmentsComplete = true
                    update.assignments = assignments
                    update.assignmentsGeneration = generation
                    try await writer.write(update)
                    lastSent = assignments
                }
            }
            guard let event = await iterator.next() else { return }
            switch event {
            case .reset: pending = true
            case .changes(let changes): pending = changes.contains { $0.table == .tasks || $0.table == .services }
            }
        }
    }

    /// The tasks a node should know about: those desired running there, and those to stop that may still run.
    static func assignments(for node: NodeID, in state: ClusterState) -> [Flotilla_V1_TaskAssignment] {
        let tasks = state.tasks.filter { task in
            task.nodeID == node.rawValue
                && (task.desiredState == .running || ![.complete, .failed, .shutdown, .orphaned].contains(task.state))
        }
        // One digest per service, not per task: it serializes the whole spec.
        var digests: [String: String] = [:]
        return tasks.map { task in
            var assignment = Flotilla_V1_TaskAssignment()
            assignment.taskID = task.id
            assignment.serviceID = task.serviceID
            assignment.desiredState = task.desiredState
            assignment.slot = task.slot
            // The service is gone: the task must stop; the spec no longer matters.
            guard let service = state.service(task.serviceID) else {
                assignment.desiredState = .shutdown
                return assignment
            }
            assignment.serviceName = service.spec.name
            let digest = digests[service.id] ?? ServiceSpecRules.taskDigest(service.spec)
            digests[service.id] = digest
            // The spec the task was made for: the current one, or the previous during an update.
            assignment.spec = task.specDigest == digest || !service.hasPreviousSpec ? service.spec : service.previousSpec
            return assignment
        }
    }

    private func requireLeader() async throws {
        let status = await raft.driver.status
        guard status.role == .leader else { throw raft.translate(RaftDriverError.notLeader(leader: status.leader)) }
    }
}

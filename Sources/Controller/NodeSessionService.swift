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
    /// Traffic and task usage for the autoscaler, this reign only.
    let load: AutoscaleMonitor
    private let liveness: Mutex<NodeLiveness>
    /// Wall-clock time of each node's last heartbeat (for `node ls`), this reign only.
    private let lastHeardWall = Mutex<[NodeID: UInt64]>([:])
    private let origin = ContinuousClock.now

    init(raft: ControllerRaft, heartbeatPeriod: Duration, load: AutoscaleMonitor = AutoscaleMonitor(window: .seconds(10)), logger: Logger) {
        self.raft = raft
        self.logger = logger
        self.load = load
        self.liveness = Mutex(NodeLiveness(heartbeatPeriod: heartbeatPeriod))
    }

    var heartbeatPeriod: Duration { liveness.withLock { $0.heartbeatPeriod } }

    /// Most nodes fell silent at once (this leader is probably the one cut off): the orchestrator orphans nothing.
    var disrupted: Bool {
        let at = now
        let nodes = raft.store.read { $0.nodes }
        return liveness.withLock { $0.disrupted(nodes, at: at) }
    }

    private var now: Duration { ContinuousClock.now - origin }

    func heartbeat(from node: NodeID) {
        let at = now
        liveness.withLock { $0.heartbeat(from: node, at: at) }
        lastHeardWall.withLock { $0[node] = UInt64(Date().timeIntervalSince1970 * 1000) }
    }

    /// Each node's images as its agent last reported them, this reign only.
    private let reportedImages = Mutex<[NodeID: [Flotilla_V1_NodeImage]]>([:])

    func record(images: [Flotilla_V1_NodeImage], of node: NodeID) {
        reportedImages.withLock { $0[node] = images }
    }

    /// nil when the node's agent has not reported its images to this leader.
    func images(of node: NodeID) -> [Flotilla_V1_NodeImage]? { reportedImages.withLock { $0[node] } }

    /// Each node's latest load-balancer report, this reign only.
    private let balancerReports = Mutex(BalancerReportTable())

    func balancerSessionOpened(_ node: NodeID) { balancerReports.withLock { $0.sessionOpened(node) } }

    func balancerSessionEnded(_ node: NodeID) {
        let at = now
        balancerReports.withLock { $0.sessionEnded(node, at: at) }
        load.forget(node: node)
    }

    func record(balancerReport report: Flotilla_V1_BalancerReport, of node: NodeID) {
        let at = now
        balancerReports.withLock { $0.record(report, of: node, at: at) }
        load.record(balancerReport: report, of: node)
    }

    func record(taskUsage usage: [Flotilla_V1_TaskUsage], of node: NodeID) {
        load.record(taskUsage: usage, of: node)
    }

    /// The node's balancer holds connections for these services (they have no replica): the autoscaler wakes them.
    func record(wakes services: [String], of node: NodeID) {
        load.record(wakes: services, from: raft.store.read { $0.node(node)?.name } ?? node.rawValue)
    }

    /// The node's latest load-balancer report, how old it is, and whether its session is still open; nil when
    /// its agent has not reported to this leader (or its session ended longer ago than the table keeps it).
    func balancerReport(of node: NodeID) -> (report: Flotilla_V1_BalancerReport, age: Duration, connected: Bool)? {
        let at = now
        return balancerReports.withLock { table in
            table.prune(at: at)
            return table.entries[node].map { ($0.report, at - $0.receivedAt, $0.connected) }
        }
    }

    /// Unix milliseconds of the node's last heartbeat to this leader; nil when none.
    func lastHeartbeatMs(of node: NodeID) -> UInt64? { lastHeardWall.withLock { $0[node] } }

    /// Follows leadership and commits status changes, until cancelled.
    func run() async {
        let tick = max(.milliseconds(20), heartbeatPeriod / 10)
        var announcedTerm: UInt64 = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            let status = await raft.driver.status
            let at = now
            let leading = status.role == .leader
            if leading && status.term.rawValue != announcedTerm, await announceElection(term: status.term.rawValue) {
                announcedTerm = status.term.rawValue
            }
            let changes: [(node: NodeID, status: NodeRecord.Status)] = liveness.withLock { liveness in
                if leading && !liveness.isLeading { liveness.becameLeader(at: at) }
                if !leading && liveness.isLeading { liveness.lostLeadership() }
                return liveness.changes(for: raft.store.read { $0.nodes }, at: at)
            }
            if !leading {
                lastHeardWall.withLock { $0 = [:] }
                reportedImages.withLock { $0 = [:] }
                balancerReports.withLock { $0.clear() }
                load.clear()
            }
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

extension NodeMonitor {
    /// Records `leader.elected` for the term this controller leads; false when it did not commit (retried at
    /// the next tick while this controller still leads).
    private func announceElection(term: UInt64) async -> Bool {
        var event = Flotilla_V1_ClusterEvent()
        event.type = "leader.elected"
        event.nodeID = raft.id.rawValue
        event.nodeName = raft.id.rawValue
        event.message = "\(raft.id) elected in term \(term)"
        do {
            if case .invalid(let why) = try await raft.propose(ClusterCommands.eventAppend(event)) {
                logger.debug("leader election event refused", metadata: ["raft.term": "\(term)", "reason": "\(why)"])
            }
            return true
        } catch {
            logger.debug("leader election event not committed", metadata: ["raft.term": "\(term)", "error": "\(error)"])
            return false
        }
    }
}

/// Serves `NodeMembership/Session` to agents.
struct NodeSessionService: Sendable {
    let raft: ControllerRaft
    let monitor: NodeMonitor
    let dispatcher: AssignmentDispatcher
    /// Sends the node the log subscriptions the broker has for it.
    let logs: LogBroker
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
        // Only once everything committed before this leader's term is applied: then its backend tables are at
        // least as new as any earlier leader's (their versions are store indexes).
        try await raft.linearizable()
        let feed = dispatcher.open(for: node)
        defer { feed.end() }
        let logLink = logs.attach(node)
        defer { logs.detach(logLink) }
        monitor.balancerSessionOpened(node)
        defer { monitor.balancerSessionEnded(node) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await dispatch(feed, writer: writer) }
            group.addTask {
                for await subscription in logLink.subscriptions {
                    var update = Flotilla_V1_SessionUpdate()
                    update.logSubscriptions = [subscription]
                    try await writer.write(update)
                }
            }
            for try await heartbeat in heartbeats {
                // A controller that lost the leadership sends its agents to the new leader.
                try await requireLeader()
                guard raft.store.read({ $0.node(node) }) != nil else {
                    throw RPCError(.permissionDenied, "node \(node) was removed from the cluster")
                }
                monitor.heartbeat(from: node)
                if heartbeat.imagesChanged { monitor.record(images: heartbeat.images, of: node) }
                if heartbeat.hasBalancerReport { monitor.record(balancerReport: heartbeat.balancerReport, of: node) }
                if !heartbeat.taskUsage.isEmpty { monitor.record(taskUsage: heartbeat.taskUsage, of: node) }
                if !heartbeat.wakeServiceIds.isEmpty { monitor.record(wakes: heartbeat.wakeServiceIds, of: node) }
                if heartbeat.resync {
                    logger.info("agent asked for its complete assignment set", metadata: ["node.id": "\(node)", "generation": "\(heartbeat.assignmentsGeneration)"])
                    feed.resync()
                }
                if !heartbeat.statuses.isEmpty {
                    _ = try await raft.propose(ClusterCommands.taskStatusReport(nodeID: node, heartbeat.statuses))
                }
            }
            group.cancelAll()
        }
    }

    /// Sends `node`'s assignments as the dispatcher produces them: the complete set first (with the heartbeat
    /// period, the controllers' addresses, the node's network and every backend table), then changes, each one
    /// generation on; the node's network again whenever it changes (a node joined, left or moved); and backend
    /// tables as they change (outside the assignment generations).
    private func dispatch(_ feed: AssignmentDispatcher.Session, writer: ResponseWriter<Flotilla_V1_SessionUpdate>) async throws {
        var generation: UInt64 = 0
        var network: NetworkView?
        while let next = await feed.next() {
            var update = Flotilla_V1_SessionUpdate()
            if generation == 0 {
                update.heartbeatPeriodMs = UInt32(monitor.heartbeatPeriod.components.seconds * 1000
                    + monitor.heartbeatPeriod.components.attoseconds / 1_000_000_000_000_000)
                update.controllers = raft.store.read { $0.controllers.map(\.address) }
            }
            let view = raft.store.read { NetworkView(for: feed.node, in: $0) }
            if view != network {
                network = view
                update.networkChanged = true
                update.subnet = view.subnet
                update.routes = view.routes
                update.clusterNetwork = ClusterState.containerNetwork
            }
            switch next {
            case .complete(let assignments, let tables):
                update.assignmentsComplete = true
                update.assignments = assignments
                update.backendTablesComplete = true
                update.backendTables = tables
            case .delta(let delta):
                update.assignments = delta.upserts
                update.removedTaskIds = delta.removed
            case .nodes:
                // Not about assignments: no generation, and nothing to send unless the network changed.
                guard update.networkChanged else { continue }
                try await writer.write(update)
                continue
            case .tables(let delta):
                // Not about assignments either: no generation.
                update.backendTables = delta.changed
                update.removedBackendTables = delta.removed
                try await writer.write(update)
                continue
            }
            generation += 1
            update.assignmentsGeneration = generation
            try await writer.write(update)
        }
    }

    /// What a node needs for container networking: its own subnet and the route to every other node's.
    struct NetworkView: Equatable {
        var subnet = ""
        var routes: [Flotilla_V1_NodeRoute] = []

        init(for node: NodeID, in state: ClusterState) {
            for record in state.nodes where !record.subnet.isEmpty {
                if record.id == node {
                    subnet = record.subnet
                } else {
                    var route = Flotilla_V1_NodeRoute()
                    route.subnet = record.subnet
                    route.via = record.address
                    routes.append(route)
                }
            }
            routes.sort { $0.subnet < $1.subnet }
        }
    }

    private func requireLeader() async throws {
        let status = await raft.driver.status
        guard status.role == .leader else { throw raft.translate(RaftDriverError.notLeader(leader: status.leader)) }
    }
}

import ClusterModel
import ClusterStore
import Foundation
import Logging
import Synchronization
import Transport
import Wire

/// The leader's log broker (the shape of Docker Swarm's): an admin's `Admin/TaskLogs` call becomes a log
/// subscription sent on the session of every node that ran the tasks; each agent answers with a
/// `NodeMembership/PublishLogs` call of its own, whose batches the broker tags with the node and writes to the
/// admin's stream. The admin's flow control reaches the agents (a slow reader slows the publishers; nothing is
/// buffered beyond the calls' windows). The stream ends when every node has sent what it has (not following),
/// or when the admin cancels (following), which ends the publishers' calls. Nodes that are down, not connected
/// or do not answer within `openTimeout` are named in notices instead of holding the stream.
final class LogBroker: Sendable {
    /// Limits, with their defaults.
    struct Limits: Sendable {
        /// Admin log streams at once on this controller (more: RESOURCE_EXHAUSTED).
        var maxStreams = 64
        /// Subscriptions waiting to be sent on one node's session (more: that node is reported busy).
        var maxQueuedPerNode = 16
        /// How long a node has to open its publisher after it was asked.
        var openTimeout = Duration.seconds(10)
    }

    private let raft: ControllerRaft
    private let limits: Limits
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        /// The session of each connected node (the newest, when a reconnection overlapped the old one).
        var sessions: [NodeID: (token: UInt64, queue: AsyncStream<Flotilla_V1_LogSubscription>.Continuation)] = [:]
        var subscriptions: [String: Subscription] = [:]
        var nextToken: UInt64 = 0
    }

    init(raft: ControllerRaft, limits: Limits = Limits(), logger: Logger) {
        self.raft = raft
        self.limits = limits
        self.logger = logger
    }

    func register(into router: inout RPCRouter) {
        router.register(Methods.taskLogs) { request, writer, _ in try await self.taskLogs(request, writer: writer) }
        router.register(Methods.publishLogs) { publications, _, context in
            try await self.publish(publications, from: context.peer.nodeID)
        }
    }

    // MARK: - Sessions

    /// A node's session with this leader opened: the subscriptions to send it come out of the stream.
    struct SessionLink: Sendable {
        let node: NodeID
        let token: UInt64
        let subscriptions: AsyncStream<Flotilla_V1_LogSubscription>
    }

    func attach(_ node: NodeID) -> SessionLink {
        let (stream, continuation) = AsyncStream.makeStream(
            of: Flotilla_V1_LogSubscription.self, bufferingPolicy: .bufferingOldest(limits.maxQueuedPerNode))
        let (token, replaced) = state.withLock { state in
            state.nextToken += 1
            defer { state.sessions[node] = (state.nextToken, continuation) }
            return (state.nextToken, state.sessions[node]?.queue)
        }
        replaced?.finish()
        return SessionLink(node: node, token: token, subscriptions: stream)
    }

    /// The session ended: subscriptions still waiting for this node's publisher give up on it.
    func detach(_ link: SessionLink) {
        let (queue, waiting) = state.withLock { state -> (AsyncStream<Flotilla_V1_LogSubscription>.Continuation?, [Subscription]) in
            guard state.sessions[link.node]?.token == link.token else { return (nil, []) }
            let queue = state.sessions.removeValue(forKey: link.node)?.queue
            return (queue, Array(state.subscriptions.values))
        }
        queue?.finish()
        for subscription in waiting where subscription.unopened.contains(link.node) {
            subscription.finished(link.node, notice: "node \(subscription.name(link.node)) disconnected before it sent its logs")
        }
    }

    // MARK: - The admin's stream

    func taskLogs(_ request: Flotilla_V1_TaskLogsRequest, writer: ResponseWriter<Flotilla_V1_TaskLogsResponse>) async throws {
        // Leader only (followers answer NOT_LEADER with its address), and a store that has every write.
        try await raft.linearizable()
        let (byNode, nodes) = try targets(request)
        let id = UUID().uuidString
        let subscription = Subscription(
            id: id, writer: writer, nodeNames: nodes.mapValues(\.name), tasks: byNode.mapValues(Set.init))
        let admitted = state.withLock { state -> Bool in
            guard state.subscriptions.count < limits.maxStreams else { return false }
            state.subscriptions[id] = subscription
            return true
        }
        guard admitted else {
            throw RPCError(.resourceExhausted, "this controller already serves \(limits.maxStreams) log streams; try again when one ends")
        }
        defer {
            subscription.close()
            _ = state.withLock { $0.subscriptions.removeValue(forKey: id) }
        }
        var notices: [String] = []
        for (node, tasks) in byNode.sorted(by: { subscription.name($0.key) < subscription.name($1.key) }) {
            let name = subscription.name(node)
            let count = tasks.count == 1 ? "its task" : "its \(tasks.count) tasks"
            guard let record = nodes[node] else {
                notices.append("node \(node) was removed from the cluster: the logs of \(count) are gone")
                continue
            }
            if record.status == .down {
                notices.append("node \(name) is down: the logs of \(count) are unavailable")
                continue
            }
            var message = Flotilla_V1_LogSubscription()
            message.id = id
            message.taskIds = tasks
            message.follow = request.follow
            if request.hasTail { message.tail = request.tail }
            message.sinceUnixNano = request.sinceUnixNano
            subscription.asked(node)
            switch send(message, to: node) {
            case .sent:
                continue
            case .notConnected:
                notices.append("node \(name) is not connected to the leader: the logs of \(count) are unavailable")
            case .busy:
                notices.append("node \(name) has too many log requests waiting: the logs of \(count) are left out; try again")
            }
            subscription.finished(node)
        }
        if !notices.isEmpty {
            var response = Flotilla_V1_TaskLogsResponse()
            response.notices = notices
            try await writer.write(response)
        }
        try await wait(for: subscription)
    }

    private enum Sending { case sent, notConnected, busy }

    private func send(_ subscription: Flotilla_V1_LogSubscription, to node: NodeID) -> Sending {
        guard let queue = state.withLock({ $0.sessions[node]?.queue }) else { return .notConnected }
        switch queue.yield(subscription) {
        case .enqueued: return .sent
        case .dropped: return .busy
        case .terminated: return .notConnected
        @unknown default: return .notConnected
        }
    }

    /// Writes notices as they come until every asked node finished (nodes that never opened a publisher are
    /// given up after `openTimeout`), or the admin cancels.
    private func wait(for subscription: Subscription) async throws {
        let openDeadline = ContinuousClock.now + limits.openTimeout
        while true {
            try Task.checkCancellation()
            let generation = subscription.changed.generation
            let notices = subscription.takeNotices()
            if !notices.isEmpty {
                var response = Flotilla_V1_TaskLogsResponse()
                response.notices = notices
                try await subscription.writer.write(response)
            }
            if subscription.isDone { return }
            let unopened = subscription.unopened
            if !unopened.isEmpty && ContinuousClock.now >= openDeadline {
                for node in unopened {
                    subscription.finished(node, notice: "node \(subscription.name(node)) did not answer within \(limits.openTimeout): its logs are missing")
                }
                continue
            }
            if unopened.isEmpty {
                await subscription.changed.wait(after: generation)
            } else {
                await subscription.changed.wait(after: generation, timeout: openDeadline - ContinuousClock.now)
            }
        }
    }

    /// The tasks to read by node, and the node records (absent: the node was removed).
    private func targets(_ request: Flotilla_V1_TaskLogsRequest) throws -> ([NodeID: [String]], [NodeID: NodeRecord]) {
        try raft.store.read { state in Result { try Self.targets(request, in: state) } }.get()
    }

    private static func targets(
        _ request: Flotilla_V1_TaskLogsRequest, in state: ClusterState
    ) throws -> ([NodeID: [String]], [NodeID: NodeRecord]) {
        let tasks: [Flotilla_V1_TaskRecord]
        if !request.service.isEmpty {
            guard let service = state.service(named: request.service) ?? state.service(request.service) else {
                throw RPCError(.notFound, "no service named '\(request.service)' (flotilla service ls lists them)")
            }
            tasks = state.tasks(ofService: service.id)
        } else if !request.taskID.isEmpty {
            guard let task = state.task(request.taskID) else {
                throw RPCError(.notFound, "no task '\(request.taskID)' (flotilla service ps SERVICE lists them)")
            }
            tasks = [task]
        } else {
            throw RPCError(.invalidArgument, "name a service or a task whose logs to read")
        }
        var byNode: [NodeID: [String]] = [:]
        for task in tasks where !task.nodeID.isEmpty {
            byNode[NodeID(task.nodeID), default: []].append(task.id)
        }
        var nodes: [NodeID: NodeRecord] = [:]
        for node in byNode.keys { nodes[node] = state.node(node) }
        return (byNode.mapValues { $0.sorted() }, nodes)
    }

    // MARK: - Publishers

    /// An agent's `PublishLogs` call: the first message names the subscription; batches go to the admin until
    /// the agent ends its half (OK) or the admin's stream is over (CANCELLED).
    func publish(_ publications: RequestStream<Flotilla_V1_LogPublication>, from node: NodeID) async throws {
        var iterator = publications.makeAsyncIterator()
        guard let first = try await iterator.next() else { return }
        guard let subscription = state.withLock({ $0.subscriptions[first.subscriptionID] }), subscription.opened(node) else {
            throw RPCError(.notFound, "no log subscription \(first.subscriptionID) waits for this node (it ended)")
        }
        do {
            try await subscription.deliver(first, from: node)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await publication in publications { try await subscription.deliver(publication, from: node) }
                }
                group.addTask {
                    await subscription.waitClosed()
                    if !Task.isCancelled { throw RPCError(.cancelled, "the log stream ended (its reader went away)") }
                }
                try await group.next()
                group.cancelAll()
            }
            subscription.finished(node)
        } catch {
            let closed = subscription.isClosed
            subscription.finished(node, notice: closed ? nil : "node \(subscription.name(node)) stopped sending its logs: \(error)")
            if !closed {
                logger.debug("log publisher failed", metadata: ["node.id": "\(node)", "error": "\(error)"])
            }
            throw error
        }
    }
}

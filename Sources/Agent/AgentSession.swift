public import Balancing
import ClusterModel
import Foundation
import NIOSSL
public import Logging
import PKI
import Synchronization
import Transport
import Wire

/// An agent's one session with the leader: finds it from any controller it knows (following NOT_LEADER),
/// heartbeats on the period the leader sets (with up to 10 % jitter, so agents do not beat in step), and
/// reconnects with jittered backoff when the leader goes away. Everything the agent runs keeps running while
/// it is disconnected (static stability).
public final class AgentSession: Sendable {
    /// Why a session ended for good.
    public enum Ending: Error, Sendable, CustomStringConvertible {
        /// The cluster removed this node: its certificate is refused.
        case removed(String)

        public var description: String {
            switch self {
            case .removed(let why): why
            }
        }
    }

    public let identity: AgentIdentity
    /// Runs the tasks the leader assigns (nil: a session that only heartbeats).
    public let worker: (any AssignmentReceiver)?
    /// Answers the leader's log subscriptions (nil: this agent keeps no logs).
    public let logs: LogPublisher?
    /// Serves the backend tables (the node's load balancer; nil: the tables are only kept, see `serviceTables`).
    public let tableReceiver: (any BackendTableReceiver)?
    /// The node's load-balancer statistics, reported to the leader (nil: none to report).
    public let balancerStats: (any BalancerStatsSource)?
    public let reporting: BalancerReporting
    /// The services whose connections wait for a replica (nil: this node holds none).
    public let wakes: (any WakeSource)?
    private let nudge = HeartbeatNudge()
    private let tables = BackendTableHolder()
    private let directory: AgentDataDirectory?
    private let logger: Logger
    private let state: Mutex<State>

    struct State {
        var controllers: [String]
        var connectedTo: String?
        var heartbeatsSent = 0
        var sessionsOpened = 0
    }

    public init(
        identity: AgentIdentity, controllers: [String], directory: AgentDataDirectory?, worker: (any AssignmentReceiver)? = nil,
        logs: LogPublisher? = nil, tables: (any BackendTableReceiver)? = nil, balancerStats: (any BalancerStatsSource)? = nil,
        reporting: BalancerReporting = BalancerReporting(), wakes: (any WakeSource)? = nil, logger: Logger
    ) {
        self.identity = identity
        self.wakes = wakes
        self.balancerStats = balancerStats
        self.reporting = reporting
        self.worker = worker
        self.logs = logs
        self.tableReceiver = tables
        self.directory = directory
        self.logger = logger
        self.state = Mutex(State(controllers: controllers))
        wakes?.onWake { [nudge] in nudge.nudge() }
    }

    /// The controller the session is on now, nil while disconnected.
    public var connectedTo: String? { state.withLock { $0.connectedTo } }
    public var heartbeatsSent: Int { state.withLock { $0.heartbeatsSent } }
    /// Sessions opened since start: one while the connection to the leader holds (a renewed certificate does
    /// not reopen it).
    public var sessionsOpened: Int { state.withLock { $0.sessionsOpened } }
    /// The controllers this agent knows of.
    public var controllers: [String] { state.withLock { $0.controllers } }
    /// Every service's backend table as the leader last sent it; kept while disconnected.
    public var serviceTables: ServiceTableSet { tables.current }

    /// Runs until cancelled; throws `Ending.removed` when the cluster has removed this node. How it looks for
    /// the leader is `LeaderSearch`'s; after a round that found none it backs off (jittered, doubling to 2 s).
    public func run() async throws {
        var search = LeaderSearch()
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            guard let (target, backOff) = search.next(controllers: state.withLock({ $0.controllers })) else { return }
            if backOff {
                // Jittered: agents that lost the same leader do not all come back at the same instant.
                try? await Task.sleep(for: backoff * Double.random(in: 0.5...1.0))
                backoff = min(backoff * 2, .seconds(2))
            }
            let openedBefore = sessionsOpened
            var ending: (any Error)?
            do {
                // The current credentials: a renewed certificate serves every connection made after it.
                try await session(with: target, tls: try TLSContexts.client(credentials: identity.current))
            } catch {
                ending = error
            }
            state.withLock { $0.connectedTo = nil }
            let opened = sessionsOpened > openedBefore
            if opened { backoff = .milliseconds(100) }
            switch ending as? RPCError {
            case let error? where error.code == .permissionDenied:
                throw Ending.removed("\(target) refused this node: \(error.message)")
            case let error? where error.code == .notLeader:
                // A follower (or a leader that stepped down): up, and perhaps it knows the leader.
                search.answered(target, leader: error.leaderAddress, sessionEnded: opened)
            default:
                logger.debug("session ended", metadata: ["controller": "\(target)", "error": "\(ending.map { "\($0)" } ?? "none")"])
                if opened { search.sessionEnded(with: target) } else { search.failed(target) }
            }
        }
    }

    private func session(with target: String, tls: NIOSSLContext) async throws {
        guard let (host, port) = HostPort.parse(target) else {
            throw RPCError(.invalidArgument, "controller address '\(target)' is not host:port")
        }
        // A controller that accepts but does not answer (stopped, overloaded) must not hold the agent for long:
        // the new leader expects it within three heartbeat periods. A leader that stops answering mid-session
        // (frozen, cut off) is found by the transport's ping: 1 s of silence, then 1 s for the answer.
        var configuration = TransportConfiguration()
        configuration.handshakeTimeout = .seconds(2)
        configuration.keepaliveInterval = .seconds(1)
        configuration.keepaliveTimeout = .seconds(1)
        let client = try await RPCClient.connect(
            host: host, port: port, tls: tls, configuration: configuration, connectTimeout: .seconds(2), logger: logger)
        defer { Task { await client.close() } }
        try await client.bidirectional(Methods.agentSession) { writer, updates in
            var iterator = updates.makeAsyncIterator()
            guard let first = try await iterator.next() else {
                throw RPCError(.unavailable, "the leader ended the session before it began")
            }
            let period = HeartbeatPeriod(Self.period(first))
            self.learn(first)
            await self.assign(first)
            self.state.withLock {
                $0.connectedTo = target
                $0.sessionsOpened += 1
            }
            self.logger.info("session with the leader", metadata: ["controller": "\(target)"])
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Task usage is read beside the heartbeats, never in their way: the latest read waits here.
                let usage = UsageReadings()
                if let worker = self.worker {
                    group.addTask {
                        while !Task.isCancelled {
                            usage.put(await worker.taskUsage())
                            try await Task.sleep(for: self.reporting.interval)
                        }
                    }
                }
                group.addTask {
                    var sequence: UInt64 = 0
                    var imagesSent: [Flotilla_V1_NodeImage]?
                    var balancerSchedule = BalancerReportSchedule(self.reporting)
                    let clock = ContinuousClock()
                    let origin = clock.now
                    while !Task.isCancelled {
                        sequence += 1
                        var heartbeat = Flotilla_V1_AgentHeartbeat()
                        heartbeat.sequence = sequence
                        heartbeat.version = FlotillaVersion.current
                        if let worker = self.worker {
                            heartbeat.statuses = await worker.takeStatuses()
                            let position = await worker.position()
                            heartbeat.assignmentsGeneration = position.generation
                            heartbeat.resync = position.needsResync
                            // The images: on the session's first heartbeat (a new leader knows none), then on change.
                            let images = await worker.images()
                            if images != imagesSent {
                                heartbeat.imagesChanged = true
                                heartbeat.images = images
                                imagesSent = images
                            }
                        }
                        if let source = self.balancerStats, balancerSchedule.collectionDue(at: clock.now - origin) {
                            if var report = balancerSchedule.toSend(await source.balancerReport(), at: clock.now - origin) {
                                report.takenMs = UInt64(Date().timeIntervalSince1970 * 1000)
                                heartbeat.balancerReport = report
                            }
                        }
                        // Only running tasks, only when there are any (each read once).
                        if let readings = usage.take() { heartbeat.taskUsage = readings }
                        if let wakes = self.wakes {
                            heartbeat.wakeServiceIds = await wakes.wakingServices()
                        }
                        do {
                            try await writer.write(heartbeat)
                        } catch {
                            // Not sent: the next session reports these.
                            await self.worker?.requeue(heartbeat.statuses)
                            throw error
                        }
                        self.state.withLock { $0.heartbeatsSent += 1 }
                        let base = period.get()
                        // A connection held for a service with no replica ends the wait: the leader hears at once.
                        try await self.nudge.wait(for: base * Double.random(in: 0.9...1.0))
                    }
                }
                while let update = try await iterator.next() {
                    if update.heartbeatPeriodMs != 0 { period.set(Self.period(update)) }
                    self.learn(update)
                    await self.assign(update)
                    // Each log subscription is answered on a call of its own, a child of the session.
                    for subscription in update.logSubscriptions {
                        guard let logs = self.logs else { break }
                        group.addTask { await logs.publish(subscription, on: client) }
                    }
                }
                group.cancelAll()
                throw RPCError(.unavailable, "the leader ended the session")
            }
        }
    }

    /// Hands an update to the table receiver (its tables, first) and to the worker (its assignments).
    private func assign(_ update: Flotilla_V1_SessionUpdate) async {
        var problems: [String] = []
        if let (change, set) = tables.apply(update, localNode: identity.current.identity.nodeID.rawValue, problems: &problems) {
            for problem in problems { logger.warning("backend table not usable", metadata: ["problem": "\(problem)"]) }
            if !change.isEmpty {
                logger.debug("backend tables changed", metadata: [
                    "added": "\(change.added.count)", "changed": "\(change.changed.count)", "removed": "\(change.removed.count)"])
                await tableReceiver?.apply(change, set: set)
            }
        }
        await worker?.apply(update)
    }

    private func learn(_ update: Flotilla_V1_SessionUpdate) {
        guard !update.controllers.isEmpty else { return }
        let configured = state.withLock { state -> [String] in
            var merged = state.controllers
            for address in update.controllers where !merged.contains(address) { merged.append(address) }
            state.controllers = merged
            return merged
        }
        directory?.saveControllers(configured)
    }

    static func period(_ update: Flotilla_V1_SessionUpdate) -> Duration {
        update.heartbeatPeriodMs == 0 ? .seconds(1) : .milliseconds(Int(update.heartbeatPeriodMs))
    }
}

/// The latest read of the tasks' usage, until a heartbeat takes it.
final class UsageReadings: Sendable {
    private let latest = Mutex<[Flotilla_V1_TaskUsage]?>(nil)
    /// Keeps `readings` for the next heartbeat (none when no task could be read).
    func put(_ readings: [Flotilla_V1_TaskUsage]) { latest.withLock { $0 = readings.isEmpty ? nil : readings } }
    /// The readings not sent yet, once.
    func take() -> [Flotilla_V1_TaskUsage]? { latest.withLock { value in defer { value = nil }; return value } }
}

/// The heartbeat period the leader set, shared between the session's reader and its heartbeat task.
final class HeartbeatPeriod: Sendable {
    private let value: Mutex<Duration>
    init(_ period: Duration) { value = Mutex(period) }
    func get() -> Duration { value.withLock { $0 } }
    func set(_ period: Duration) { value.withLock { $0 = period } }
}

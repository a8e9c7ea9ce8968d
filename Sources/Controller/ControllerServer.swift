import ClusterModel
import Synchronization
import ClusterStore
public import CoreMetrics
import Foundation
public import Logging
import NIOCore
public import PKI
import Raft
public import RaftRuntime
public import ServiceLifecycle
public import Transport
import Wire

/// Everything a controller process is configured with.
public struct ControllerConfiguration: Sendable {
    public var dataDirectory: String
    /// host:port to listen on for the protocol (mTLS).
    public var listenAddress: String
    /// host:port the other controllers and clients reach this one on; derived from the listen address when
    /// nil (a wildcard host becomes 127.0.0.1).
    public var advertiseAddress: String?
    /// Controllers to ask for admission when this one is not yet a member.
    public var joinAddresses: [String] = []
    public var transport: TransportConfiguration
    public var raft: RaftDriverConfiguration
    /// How often agents heartbeat; a node that misses three periods is marked down.
    public var heartbeatPeriod: Duration = .seconds(1)
    /// How long certificates issued to joining nodes last (they renew themselves well before).
    public var nodeCertificateLifetime: Duration = .seconds(30 * 86_400)
    /// Set on a cluster's first start (`--init`): once leader, create one join token per role and hand them
    /// to this closure (agent token, controller token).
    public var announceJoinTokens: (@Sendable (_ agent: String, _ controller: String) -> Void)?
    /// Where its metrics are recorded (the process's Prometheus registry); none by default. Scrapes call
    /// `ControllerServer.refreshMetrics()` first, for the gauges read from the store.
    public var metrics: any MetricsFactory = NOOPMetricsHandler.instance
    /// How far back the autoscaler's rates (requests/s, CPU) look over the agents' reports.
    public var autoscaleWindow: Duration = .seconds(10)
    /// How often the leader evaluates every autoscaled service.
    public var autoscaleInterval: Duration = .seconds(1)

    public init(
        dataDirectory: String, listenAddress: String, advertiseAddress: String? = nil, joinAddresses: [String] = [],
        announceJoinTokens: (@Sendable (_ agent: String, _ controller: String) -> Void)? = nil,
        transport: TransportConfiguration = .init(), raft: RaftDriverConfiguration = .init()
    ) {
        self.announceJoinTokens = announceJoinTokens
        self.dataDirectory = dataDirectory
        self.listenAddress = listenAddress
        self.advertiseAddress = advertiseAddress
        self.joinAddresses = joinAddresses
        self.transport = transport
        self.raft = raft
    }
}

/// The controller process: a Raft member with the replicated store, serving the protocol (admin API, Raft
/// between controllers, membership) until shut down gracefully.
public final class ControllerServer: Service {
    public let configuration: ControllerConfiguration
    /// This controller's credentials now (renewed while it runs).
    public var credentials: Credentials { currentCredentials.withLock { $0 } }
    private let currentCredentials: Mutex<Credentials>
    private let authority: ClusterAuthority
    private let credentialsPath: String
    private let logger: Logger
    private let server: RPCServer
    private let raft: ControllerRaft
    private let peers: RaftPeers
    private let membership: MembershipService
    private let admin: AdminService
    private let monitor: NodeMonitor
    private let orchestration: OrchestrationLoop
    private let autoscale: AutoscaleLoop
    private let dispatcher: AssignmentDispatcher
    private let advertise: String
    private let store: StoreApplication
    private let metrics: ControllerMetrics

    /// Opens the Raft storage and binds the listening socket, so a bad address or a damaged disk fails
    /// before anything else starts.
    public init(configuration: ControllerConfiguration, credentials: Credentials, logger: Logger) async throws {
        guard let (host, port) = HostPort.parse(configuration.listenAddress, allowingPortZero: true) else {
            throw ControllerError(
                .invalidConfiguration, "--listen \(configuration.listenAddress) is not host:port (e.g. 0.0.0.0:7400)")
        }
        self.configuration = configuration
        self.currentCredentials = Mutex(credentials)
        self.logger = logger
        let id = credentials.identity.nodeID
        let store = StoreApplication()
        self.store = store
        let metrics = ControllerMetrics(factory: configuration.metrics)
        self.metrics = metrics
        let clientTLS = try TLSContexts.client(credentials: credentials)
        let peers = RaftPeers(selfID: id, tls: clientTLS, logger: logger) {
            store.read { Dictionary($0.controllers.map { ($0.id, $0.address) }, uniquingKeysWith: { a, _ in a }) }
        }
        let directory = ControllerDataDirectory(path: configuration.dataDirectory)
        let driver = try RaftDriver(
            id: id, directory: directory.raftPath, bootstrap: directory.isFounder, application: store,
            transport: peers, configuration: configuration.raft, seed: UInt64.random(in: 1...UInt64.max), logger: logger,
            metrics: configuration.metrics)
        let raft = ControllerRaft(id: id, driver: driver, store: store)
        self.raft = raft
        self.peers = peers

        var router = RPCRouter()
        DiagnosticsService.register(into: &router)
        router.register(Methods.raftStream) { messages, _, context in
            let peer = context.peer.nodeID
            if let address = context.metadata[RaftPeers.advertiseMetadataKey] {
                peers.learn(peer, address: address)
            }
            peers.inboundStreamOpened(from: peer)
            do {
                for try await record in messages {
                    guard let message = try? RaftRecords.message(record), message.to == id, message.from == peer else { continue }
                    await driver.receive(message)
                }
            } catch {
                if peers.inboundStreamClosed(from: peer) { await driver.peerUnreachable(peer) }
                throw error
            }
            if peers.inboundStreamClosed(from: peer) { await driver.peerUnreachable(peer) }
        }
        // Joiners (no certificate yet, a join token instead) may connect and call the join method only.
        let server = try await RPCServer.bind(
            host: host, port: port, tls: try TLSContexts.server(credentials: credentials, acceptingJoiners: true), router: router,
            allowedPeerRoles: Set(NodeRole.certificateRoles + [.joiner]), configuration: configuration.transport, logger: logger)
        // The advertised address needs the real port when 0 was asked for.
        let boundPort = server.localAddress.port ?? port
        let advertise = configuration.advertiseAddress
            ?? ((host == "0.0.0.0" || host == "::") ? "127.0.0.1:\(boundPort)" : (host.contains(":") ? "[\(host)]:\(boundPort)" : "\(host):\(boundPort)"))
        self.advertise = advertise
        peers.setAdvertiseAddress(advertise)
        let authority = ClusterAuthority(store: store, localCAPath: directory.caPath)
        self.authority = authority
        self.credentialsPath = directory.credentialsPath
        let monitor = NodeMonitor(
            raft: raft, heartbeatPeriod: configuration.heartbeatPeriod, load: AutoscaleMonitor(window: configuration.autoscaleWindow),
            logger: logger)
        self.monitor = monitor
        let autoscale = AutoscaleLoop(
            raft: raft, monitor: monitor.load, interval: configuration.autoscaleInterval, metrics: configuration.metrics, logger: logger)
        self.autoscale = autoscale
        // A removed node's certificate stays valid cryptographically; the cluster refuses it by id.
        router.admission = { peer in
            guard peer.role != .joiner, peer.role != .admin, store.read({ $0.isRevoked(peer.nodeID) }) else { return nil }
            return RPCError(.permissionDenied, "\(peer) was removed from the cluster; its certificate is no longer accepted")
        }
        let dispatcher = AssignmentDispatcher(store: store)
        self.dispatcher = dispatcher
        let logBroker = LogBroker(raft: raft, logger: logger)
        logBroker.register(into: &router)
        NodeSessionService(raft: raft, monitor: monitor, dispatcher: dispatcher, logs: logBroker, logger: logger).register(into: &router)
        ServiceAdmin(raft: raft).register(into: &router)
        EventService(raft: raft).register(into: &router)
        self.orchestration = OrchestrationLoop(
            raft: raft, placements: metrics.placements, disrupted: { monitor.disrupted }, logger: logger)
        let membership = MembershipService(raft: raft, peers: peers, advertiseAddress: advertise, authority: authority, logger: logger)
        self.membership = membership
        let admin = AdminService(
            credentials: credentials, listenAddress: advertise, startedAt: ContinuousClock.now, raft: raft,
            authority: authority, monitor: monitor, autoscale: autoscale)
        admin.register(into: &router)
        self.admin = admin
        NodeJoinService(
            raft: raft, authority: authority, limiter: JoinRateLimiter(),
            agentCertificateLifetime: configuration.nodeCertificateLifetime,
            controllerCertificateLifetime: configuration.nodeCertificateLifetime, logger: logger)
            .register(into: &router)
        membership.register(into: &router)
        server.setRouter(router)
        self.server = server
    }

    /// Where the server actually listens (the port is real even when 0 was asked for).
    public var localAddress: String { advertise }

    public func run() async throws {
        logger.info(
            "controller serving",
            metadata: ["controller.id": "\(credentials.identity.nodeID)", "listen": "\(localAddress)",
                       "cluster.id": "\(credentials.clusterID)"])
        let server = self.server
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await self.raft.driver.run()
                } catch is CancellationError {
                } catch {
                    // A storage failure: stop serving rather than answer from state we cannot trust.
                    server.beginGracefulShutdown()
                    throw error
                }
            }
            group.addTask { await self.peers.run() }
            group.addTask { await self.membership.maintain() }
            group.addTask { await self.monitor.run() }
            group.addTask { await self.orchestration.run() }
            group.addTask { await self.autoscale.run() }
            group.addTask { await self.dispatcher.run() }
            group.addTask { await self.renewOwnCertificate() }
            if !configuration.joinAddresses.isEmpty {
                group.addTask { await self.joinUntilMember() }
            }
            if let announce = configuration.announceJoinTokens {
                group.addTask { await self.createFirstJoinTokens(announce) }
            }
            try await withGracefulShutdownHandler {
                try await server.run()
            } onGracefulShutdown: {
                server.beginGracefulShutdown()
            }
            group.cancelAll()
            try await group.waitForAll()
        }
        logger.info("controller stopped")
    }

    /// Renews this controller's certificate at a random point in 50–80 % of its life, from the cluster CA (the
    /// replicated one, or the founder's file), and serves new connections with it; open ones are untouched.
    private func renewOwnCertificate() async {
        var due = CertificateRenewal.renewalDate(for: credentials.certificate)
        while !Task.isCancelled {
            await CertificateRenewal.sleep(until: due)
            guard !Task.isCancelled else { return }
            do {
                let current = credentials
                let (dnsNames, ipAddresses) = ControllerDataDirectory.subjectAlternativeNames(
                    [configuration.listenAddress] + (configuration.advertiseAddress.map { [$0] } ?? []))
                let renewed = try Credentials.issue(
                    by: try authority.current(), identity: current.identity, dnsNames: dnsNames, ipAddresses: ipAddresses,
                    now: Date(), validity: configuration.nodeCertificateLifetime)
                try renewed.write(to: credentialsPath)
                server.replaceTLS(try TLSContexts.server(credentials: renewed, acceptingJoiners: true))
                peers.replaceTLS(try TLSContexts.client(credentials: renewed))
                currentCredentials.withLock { $0 = renewed }
                due = CertificateRenewal.renewalDate(for: renewed.certificate)
                logger.info("certificate renewed", metadata: ["not_after": "\(renewed.certificate.notValidAfter)"])
            } catch {
                logger.warning("certificate renewal failed; retrying", metadata: ["error": "\(error)"])
                due = Date().addingTimeInterval(5)
            }
        }
    }

    /// A new cluster's first join tokens, one per role, handed to `announce` (the founder prints them).
    private func createFirstJoinTokens(_ announce: @escaping @Sendable (_ agent: String, _ controller: String) -> Void) async {
        while !Task.isCancelled {
            if await raft.driver.status.role == .leader {
                var agent = Flotilla_V1_TokenCreateRequest()
                agent.role = NodeRole.agent.rawValue
                var controller = Flotilla_V1_TokenCreateRequest()
                controller.role = NodeRole.controller.rawValue
                do {
                    let agentToken = try await admin.tokenCreate(agent).token
                    let controllerToken = try await admin.tokenCreate(controller).token
                    announce(agentToken, controllerToken)
                    return
                } catch {
                    logger.warning("could not create the first join tokens yet", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Asks the given controllers (following NOT_LEADER) to admit this one until it is in the configuration.
    private func joinUntilMember() async {
        guard let tls = try? TLSContexts.client(credentials: credentials) else { return }
        var backoff = Duration.milliseconds(200)
        while !Task.isCancelled {
            if await raft.driver.status.configuration.members.contains(raft.id) { return }
            var targets = configuration.joinAddresses
            var hops = 0
            while let target = targets.first, hops < 8, !Task.isCancelled {
                targets.removeFirst()
                hops += 1
                guard let (host, port) = HostPort.parse(target) else { continue }
                do {
                    let client = try await RPCClient.connect(host: host, port: port, tls: tls, connectTimeout: .seconds(2))
                    var request = Flotilla_V1_JoinRequest()
                    request.id = raft.id.rawValue
                    request.address = advertise
                    do {
                        let response = try await client.unary(Methods.controllerJoin, request, options: CallOptions(timeout: .seconds(5)))
                        logger.info("joined the cluster", metadata: ["via": "\(target)", "voters": "\(response.voters)"])
                        await client.close()
                        return
                    } catch let error as RPCError where error.code == .notLeader {
                        if let leader = error.leaderAddress { targets.insert(leader, at: 0) }
                    }
                    await client.close()
                } catch {
                    logger.warning("join attempt failed", metadata: ["via": "\(target)", "error": "\(error)"])
                }
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
    }

    /// Starts a graceful shutdown (tests; a process uses SIGTERM through its ServiceGroup).
    public func beginGracefulShutdown() {
        server.beginGracefulShutdown()
    }

    /// Sets the gauges read at scrape time (sessions, tasks by state, nodes by status) in the metrics factory
    /// of its configuration; a /metrics endpoint calls it before it renders.
    public func refreshMetrics() {
        metrics.refresh(from: store.read { $0 }, sessions: dispatcher.sessionCount)
    }

    /// Raft status, for tests and diagnostics.
    public var raftStatus: RaftStatus {
        get async { await raft.driver.status }
    }
}

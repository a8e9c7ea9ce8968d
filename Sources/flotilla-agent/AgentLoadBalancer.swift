import Agent
import Balancing
import ClusterModel
import ClusterStore
import ContainerRuntime
import Foundation
import LoadBalancer
import Logging
import Messages
import NIOPosix
import Synchronization

/// The node's load balancer as the agent runs it: the backend tables from the session go to a `NodeBalancer`
/// (published ports on every address, virtual IPs when the service network could be routed here), the DNS
/// responder answers service names on the container gateway, and a task stopped on purpose drains first.
final class AgentLoadBalancer: Sendable {
    let balancer: NodeBalancer
    let names: ServiceNameTable
    private let threads: ProxyThreads
    private let serviceNetwork: IPv4Subnet?
    private let logger: Logger
    private let stopping = Mutex(false)

    private init(balancer: NodeBalancer, names: ServiceNameTable, threads: ProxyThreads, serviceNetwork: IPv4Subnet?,
                 logger: Logger) {
        self.balancer = balancer
        self.names = names
        self.threads = threads
        self.serviceNetwork = serviceNetwork
        self.logger = logger
    }

    /// - Parameters:
    ///   - workers: event-loop threads forwarding traffic.
    ///   - meshHost: where published ports listen.
    static func start(workers: Int, meshHost: String, logger: Logger) async -> AgentLoadBalancer {
        let threads = ProxyThreads(workers: workers)
        var routed: IPv4Subnet?
        if getuid() == 0, let network = try? IPv4Subnet(parsing: ClusterState.serviceNetwork) {
            do {
                try await NodeNetwork.routeLocally(network)
                routed = network
            } catch {
                logger.warning("virtual IPs not served on this node (services stay reachable on their published ports)",
                               metadata: ["error": "\(error)"])
            }
        } else {
            logger.notice("virtual IPs need root; this node serves published ports only")
        }
        let names = ServiceNameTable()
        let balancer = NodeBalancer(threads: threads, meshHost: meshHost, serveVirtualIPs: routed != nil, names: names, logger: logger)
        return AgentLoadBalancer(balancer: balancer, names: names, threads: threads, serviceNetwork: routed, logger: logger)
    }

    /// What the session hands the tables to.
    var receiver: any BackendTableReceiver { TableReceiver(balancer: balancer) }

    struct TableReceiver: BackendTableReceiver {
        let balancer: NodeBalancer
        func apply(_ change: TableSetChange, set: ServiceTableSet) async {
            await balancer.apply(set, change: change)
        }
    }

    /// What the session reports to the leader of this node's traffic.
    var statsSource: any BalancerStatsSource { StatsSource(balancer: balancer) }

    struct StatsSource: BalancerStatsSource {
        let balancer: NodeBalancer
        func balancerReport() async -> Flotilla_V1_BalancerReport { await balancer.report() }
    }

    /// What tells the session which services wait for a replica (scale from zero).
    var wakeSource: any WakeSource { WakeSourceAdapter(balancer: balancer) }

    struct WakeSourceAdapter: WakeSource {
        let balancer: NodeBalancer
        func wakingServices() async -> [String] { await balancer.wakingServices() }
        func onWake(_ handler: @escaping @Sendable () -> Void) { balancer.onWake(handler) }
    }

    /// Before a task is stopped on purpose: wait until the leader's table has it draining (no new connections
    /// anywhere), then until its connections have finished, up to the service's drain timeout: this node's, and,
    /// when the task has a network namespace (`namespace` gives its path), every connection its container still
    /// serves, since other nodes' balancers hold connections to it too.
    func drainBeforeStop(namespace: @escaping @Sendable (_ taskID: String) -> String?) -> TaskWorker.StopHook {
        { [self] assignment in
            guard !stopping.withLock({ $0 }) else { return }
            let id = assignment.taskID
            guard let timeout = await balancer.drainTimeout(ofBackend: id) else { return }
            let clock = ContinuousClock()
            let tableDeadline = clock.now + .seconds(2)
            while clock.now < tableDeadline, await balancer.takesNewConnections(backend: id) {
                try? await Task.sleep(for: .milliseconds(50))
            }
            let deadline = clock.now + timeout
            var active = await balancer.active(toBackend: id)
            while active > 0, clock.now < deadline {
                try? await Task.sleep(for: .milliseconds(100))
                active = await balancer.active(toBackend: id)
            }
            if let path = namespace(id), FileManager.default.fileExists(atPath: path) {
                // The other agents got the same table at about the same moment: give one that applied it a little
                // later the time to, then wait for the connections they opened before it.
                try? await Task.sleep(for: max(.zero, min(.milliseconds(200), deadline - clock.now)))
                var served = await NetworkNamespace.servedConnections(at: path) ?? 0
                while served > 0, clock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(50))
                    served = await NetworkNamespace.servedConnections(at: path) ?? 0
                }
                active = max(active, served)
            }
            if active > 0 {
                logger.notice("drain timeout passed with connections still open", metadata: ["task": "\(id)", "open": "\(active)"])
            }
        }
    }

    /// Serves DNS on the container gateway once the node's network has one; returns only when cancelled (the
    /// agent's task group ends when any of its tasks does).
    func runDNS(networking: ContainerNetwork?) async {
        await serveDNS(networking: networking)
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    }

    private func serveDNS(networking: ContainerNetwork?) async {
        guard let networking else { return }
        var gateway: IPv4Address?
        while gateway == nil {
            gateway = await networking.gateway
            if gateway == nil {
                do { try await Task.sleep(for: .seconds(1)) } catch { return }
            }
        }
        do {
            let server = try await ServiceDNSServer.bind(host: "\(gateway!)", resolver: names, logger: logger)
            logger.info("DNS responder serving service names", metadata: ["address": "\(gateway!):53"])
            try await withTaskCancellationHandler {
                try await server.run()
            } onCancel: {
                server.shutdown()
            }
        } catch {
            logger.error("DNS responder not running; containers cannot resolve service names", metadata: ["error": "\(error)"])
        }
    }

    /// Agent exit: no more draining (the tasks stay or stop at once), listeners closed, the route removed.
    func shutdown() async {
        stopping.withLock { $0 = true }
        await balancer.shutdown()
        if let serviceNetwork { await NodeNetwork.unrouteLocally(serviceNetwork) }
        await threads.shutdown()
    }
}

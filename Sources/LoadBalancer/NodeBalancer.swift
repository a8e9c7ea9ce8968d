public import Balancing
import ClusterModel
public import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The node's load balancer: serves every service of the leader's backend tables on its published ports (the
/// routing mesh: any node reaches every healthy replica) and on its virtual IP's target ports (service to
/// service), and keeps the DNS names of the services current. An update is applied whole: each port's proxy
/// swaps its backends on every event loop; connections already established keep theirs.
public actor NodeBalancer {
    private let threads: ProxyThreads
    private let meshHost: String
    private let serveVirtualIPs: Bool
    private let names: ServiceNameTable?
    private let logger: Logger
    private var tables = ServiceTableSet()
    private var ports: [PortKey: ServedPort] = [:]
    /// Listens that failed, so each is logged once per cause rather than on every update.
    private var reportedFailures: Set<String> = []
    private let wakeSignal = WakeSignal()

    struct PortKey: Hashable {
        var serviceID: String
        var target: Int
    }

    /// One port of one service: its proxy and where it listens.
    final class ServedPort {
        let proxy: ServiceProxy
        var mesh: ProxyListener?
        var meshPort = 0
        var virtual: ProxyListener?
        var virtualAddress = ""

        init(proxy: ServiceProxy) { self.proxy = proxy }
    }

    /// - Parameters:
    ///   - meshHost: where published ports listen ("0.0.0.0": every address of the node).
    ///   - serveVirtualIPs: listen on each service's virtual IP too (the node routes the service network locally).
    ///   - names: the DNS responder's table, kept to service name → virtual IP.
    public init(threads: ProxyThreads, meshHost: String = "0.0.0.0", serveVirtualIPs: Bool, names: ServiceNameTable? = nil,
                logger: Logger) {
        self.threads = threads
        self.meshHost = meshHost
        self.serveVirtualIPs = serveVirtualIPs
        self.names = names
        self.logger = logger
    }

    /// The tables now served.
    public var current: ServiceTableSet { tables }

    /// Serves `set`; `change` says which services differ from what is served.
    public func apply(_ set: ServiceTableSet, change: TableSetChange) async {
        tables = set
        for id in change.removed {
            for key in ports.keys where key.serviceID == id { await close(key) }
        }
        for id in change.added + change.changed {
            guard let table = set[serviceID: id] else { continue }
            await serve(table)
        }
        names?.replaceAll(Dictionary(set.tables.values.compactMap { table -> (String, [IPv4Address])? in
            guard let address = IPv4Address(table.virtualIP) else { return nil }
            return (table.name.lowercased(), [address])
        }, uniquingKeysWith: { first, _ in first }))
    }

    private func serve(_ table: ServiceTable) async {
        let wanted = Set(table.ports.map { PortKey(serviceID: table.serviceID, target: $0.target) })
        for key in ports.keys where key.serviceID == table.serviceID && !wanted.contains(key) { await close(key) }
        for (index, port) in table.ports.enumerated() {
            let key = PortKey(serviceID: table.serviceID, target: port.target)
            let settings = ProxySettings(table: table, port: port)
            let backends = table.backends.map { backend in
                var backend = backend
                // The reported address is the task's first port; the others are on the same host.
                if index > 0 { backend.port = port.target }
                if backend.maxConnections == 0 { backend.maxConnections = table.settings.maxConnections }
                return backend
            }
            // TCP and HTTP run on different threads: a port changing mode is opened anew.
            if let existing = ports[key], existing.proxy.mode != settings.mode { await close(key) }
            let served: ServedPort
            if let existing = ports[key] {
                served = existing
                try? await existing.proxy.update(settings: settings, backends: backends).get()
            } else {
                do {
                    served = ServedPort(proxy: try ServiceProxy(name: "\(table.name):\(port.target)", settings: settings,
                                                                backends: backends, threads: threads,
                                                                firstHeld: { [wakeSignal] in wakeSignal.fire() }))
                } catch {
                    logger.error("load balancer cannot start threads", metadata: ["service": "\(table.name)", "error": "\(error)"])
                    continue
                }
                ports[key] = served
            }
            await listen(served, table: table, port: port)
        }
    }

    /// Opens (or moves) the port's mesh and virtual-IP listeners; a port that cannot be bound is logged and
    /// retried on the next update.
    private func listen(_ served: ServedPort, table: ServiceTable, port: ServiceTable.Port) async {
        if served.mesh != nil, served.meshPort != port.published {
            await served.mesh?.close()
            served.mesh = nil
        }
        if served.mesh == nil, port.published > 0 {
            served.mesh = await bind(host: meshHost, port: port.published, served.proxy, what: "published port of \(table.name)")
            served.meshPort = port.published
        }
        let address = serveVirtualIPs ? table.virtualIP : ""
        if served.virtual != nil, served.virtualAddress != address {
            await served.virtual?.close()
            served.virtual = nil
        }
        if served.virtual == nil, !address.isEmpty {
            served.virtual = await bind(host: address, port: port.target, served.proxy, what: "virtual IP of \(table.name)")
            served.virtualAddress = address
        }
    }

    private func bind(host: String, port: Int, _ proxy: ServiceProxy, what: String) async -> ProxyListener? {
        do {
            let listener = try await ProxyListener.bind(host: host, port: port, service: proxy)
            reportedFailures.remove("\(host):\(port)")
            logger.info("load balancer listening", metadata: ["address": "\(host):\(port)", "for": "\(what)"])
            return listener
        } catch {
            if reportedFailures.insert("\(host):\(port)").inserted {
                logger.error("load balancer cannot listen", metadata: ["address": "\(host):\(port)", "for": "\(what)", "error": "\(error)"])
            }
            return nil
        }
    }

    private func close(_ key: PortKey) async {
        guard let served = ports.removeValue(forKey: key) else { return }
        await served.mesh?.close()
        await served.virtual?.close()
        served.proxy.retire()
    }

    // MARK: - Scale from zero

    /// The services (ids, sorted) whose ports hold connections now, waiting for a first backend: the node asks
    /// the leader to start a replica of each (`AgentHeartbeat.wake_service_ids`) for as long as they wait.
    public func wakingServices() -> [String] {
        Set(ports.filter { $0.value.proxy.heldConnections > 0 }.map(\.key.serviceID)).sorted()
    }

    /// `handler` is called (on an event loop: it must return quickly) whenever a port of a service starts
    /// holding connections, so that the agent can ask for a replica at once instead of at its next heartbeat.
    /// One handler; a new one replaces it, nil removes it.
    public nonisolated func onWake(_ handler: (@Sendable () -> Void)?) {
        wakeSignal.set(handler)
    }

    /// Statistics of every served port (with its service id, name and ports), sorted by name.
    public func stats() async -> [ServiceStats] {
        var all: [ServiceStats] = []
        for (key, served) in ports {
            guard var stats = try? await served.proxy.stats() else { continue }
            stats.serviceID = key.serviceID
            stats.serviceName = tables[serviceID: key.serviceID]?.name ?? ""
            stats.targetPort = key.target
            stats.publishedPort = served.meshPort
            all.append(stats)
        }
        return all.sorted { ($0.service, $0.targetPort) < ($1.service, $1.targetPort) }
    }

    /// Connections (TCP) or requests (HTTP) in flight through this node's balancer to the backend `id`.
    public func active(toBackend id: String) async -> Int {
        var total = 0
        for served in ports.values {
            if let stats = try? await served.proxy.stats() {
                total += stats.backends.filter { $0.id == id }.map(\.active).reduce(0, +)
            }
        }
        return total
    }

    /// How long the service of backend `id` lets a leaving backend's connections finish; nil when no table
    /// served here has that backend (nothing to drain).
    public func drainTimeout(ofBackend id: String) -> Duration? {
        tables.tables.values.first { table in table.backends.contains { $0.id == id } }?.settings.drainTimeout
    }

    /// Whether some table still gives backend `id` new connections (weight above 0).
    public func takesNewConnections(backend id: String) -> Bool {
        tables.tables.values.contains { table in table.backends.contains { $0.id == id && $0.weight > 0 } }
    }

    /// Stops listening everywhere; connections in flight finish on their own.
    public func shutdown() async {
        for key in Array(ports.keys) { await close(key) }
    }
}

extension ProxySettings {
    /// The settings a port of a service's table asks for.
    public init(table: ServiceTable, port: ServiceTable.Port) {
        func millis(_ duration: Duration) -> Int64 {
            let (seconds, attoseconds) = duration.components
            return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
        }
        self.init(
            mode: port.mode, policy: table.policy,
            balancing: BalancingOptions(slowStartMillis: UInt64(max(0, millis(table.settings.slowStart))),
                                        preferLocal: table.settings.preferLocal),
            retries: table.settings.retries,
            connectTimeoutMillis: millis(table.settings.connectTimeout),
            idleTimeoutMillis: millis(table.settings.idleTimeout),
            requestTimeoutMillis: millis(table.settings.requestTimeout),
            proxyProtocol: table.settings.proxyProtocol,
            holdWhenEmpty: table.holdWhenEmpty,
            holdTimeoutMillis: max(1, millis(table.settings.holdTimeout)),
            holdQueueLimit: max(0, table.settings.holdQueueLimit))
    }
}

/// The node balancer's one wake handler, callable from any event loop.
final class WakeSignal: Sendable {
    private let handler = Mutex<(@Sendable () -> Void)?>(nil)

    func set(_ new: (@Sendable () -> Void)?) { handler.withLock { $0 = new } }

    func fire() { handler.withLock { $0 }?() }
}

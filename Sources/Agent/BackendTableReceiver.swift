public import Balancing
public import Messages
import ClusterModel
import Synchronization

/// Whatever serves this node's backend tables: the node's load balancer (listeners on the published ports and
/// the virtual IPs, forwarding with Balancing). The session hands it every change of the table set, in order,
/// with the whole set after it, to swap in at once; it keeps the set while the session is down.
public protocol BackendTableReceiver: Sendable {
    /// The node's tables changed: `change` names the services added, changed or removed; `set` is every table
    /// now. Called one change at a time, never concurrently.
    func apply(_ change: TableSetChange, set: ServiceTableSet) async
}

/// A table from the leader that this agent cannot use (a mode or policy from a newer Flotilla).
struct BackendTableError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension ServiceTable {
    /// The leader's table as the balancer takes it. `localNode` is this agent's node id: backends there are
    /// local (for `prefer_local`). A backend whose address is not host:port is left out (and logged by the caller
    /// through `skipped`).
    init(proto table: Flotilla_V1_BackendTable, localNode: String, skipped: inout [String]) throws(BackendTableError) {
        guard let mode = ProxyMode(named: table.mode) else {
            throw BackendTableError(message: "service \(table.serviceName): mode '\(table.mode)' is unknown to this agent; upgrade it")
        }
        guard let policy = BalancingPolicy(named: table.policy) else {
            throw BackendTableError(message: "service \(table.serviceName): policy '\(table.policy)' is unknown to this agent; upgrade it")
        }
        var ports: [Port] = []
        for port in table.ports {
            guard let portMode = ProxyMode(named: port.protocol) else {
                throw BackendTableError(message: "service \(table.serviceName): port protocol '\(port.protocol)' is unknown to this agent; upgrade it")
            }
            ports.append(Port(published: Int(port.publishedPort), target: Int(port.targetPort), mode: portMode))
        }
        let settings = Settings(proto: table.settings)
        var backends: [Backend] = []
        for endpoint in table.backends {
            guard let (host, port) = HostPort.parse(endpoint.address) else {
                skipped.append("\(endpoint.taskID) at '\(endpoint.address)'")
                continue
            }
            backends.append(Backend(
                id: endpoint.taskID, host: host, port: port, weight: endpoint.draining ? 0 : endpoint.weight, node: endpoint.nodeID,
                isLocal: endpoint.nodeID == localNode, maxConnections: settings.maxConnections))
        }
        self.init(
            serviceID: table.serviceID, name: table.serviceName, version: table.version, mode: mode, policy: policy,
            virtualIP: table.virtualIp, ports: ports, settings: settings, backends: backends, holdWhenEmpty: table.holdWhenEmpty)
    }
}

extension ServiceTable.Settings {
    /// The spec's settings; what the leader left unset (an older leader) takes the defaults.
    init(proto: Flotilla_V1_LoadBalancerSpec) {
        let defaults = Self()
        func duration(_ milliseconds: UInt32, or fallback: Duration) -> Duration {
            milliseconds == 0 ? fallback : .milliseconds(Int(milliseconds))
        }
        self.init(
            retries: proto.hasRetries ? Int(proto.retries) : defaults.retries,
            connectTimeout: duration(proto.connectTimeoutMs, or: defaults.connectTimeout),
            idleTimeout: duration(proto.idleTimeoutMs, or: defaults.idleTimeout),
            requestTimeout: duration(proto.requestTimeoutMs, or: defaults.requestTimeout),
            drainTimeout: duration(proto.drainTimeoutMs, or: defaults.drainTimeout),
            proxyProtocol: proto.proxyProtocol,
            maxConnections: Int(proto.backendMaxConnections),
            slowStart: .milliseconds(Int(proto.slowStartMs)),
            preferLocal: proto.preferLocal,
            holdTimeout: duration(proto.holdTimeoutMs, or: defaults.holdTimeout),
            holdQueueLimit: proto.holdQueueLimit == 0 ? defaults.holdQueueLimit : Int(proto.holdQueueLimit))
    }
}

/// The agent's backend tables: kept across sessions (the balancer goes on serving the last tables while the
/// controllers are unreachable; a new session's complete set replaces them), updated one session update at a
/// time, each update applied whole.
final class BackendTableHolder: Sendable {
    private let tables = Mutex(ServiceTableSet())

    var current: ServiceTableSet { tables.withLock { $0 } }

    /// Applies the tables `update` carries (if any); returns the change and the new set, nil when the update
    /// carried no tables. `problems` collects what could not be used.
    func apply(_ update: Flotilla_V1_SessionUpdate, localNode: String, problems: inout [String]) -> (TableSetChange, ServiceTableSet)? {
        let complete = update.backendTablesComplete
        guard complete || !update.backendTables.isEmpty || !update.removedBackendTables.isEmpty else { return nil }
        let held = current
        var incoming: [ServiceTable] = []
        for proto in update.backendTables {
            var skipped: [String] = []
            do {
                incoming.append(try ServiceTable(proto: proto, localNode: localNode, skipped: &skipped))
            } catch {
                problems.append(error.message)
                // A complete set must not drop a service this agent already serves.
                if complete, let kept = held[serviceID: proto.serviceID] { incoming.append(kept) }
            }
            if !skipped.isEmpty { problems.append("service \(proto.serviceName): backends without a host:port address left out: \(skipped.joined(separator: ", "))") }
        }
        return tables.withLock { set in
            let change = set.apply(complete: complete, tables: incoming, removed: update.removedBackendTables)
            return (change, set)
        }
    }
}

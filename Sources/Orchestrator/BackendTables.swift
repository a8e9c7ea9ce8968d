public import ClusterModel
public import ClusterStore
public import Messages

/// What changed among the backend tables since the last time they were computed: tables that are new or whose
/// content changed (at their new versions), and services that have none any more.
public struct BackendTableDelta: Sendable, Equatable {
    /// New or changed tables, sorted by service id.
    public var changed: [Flotilla_V1_BackendTable] = []
    /// Ids of services whose tables are gone, sorted.
    public var removed: [String] = []

    public init(changed: [Flotilla_V1_BackendTable] = [], removed: [String] = []) {
        self.changed = changed
        self.removed = removed
    }

    public var isEmpty: Bool { changed.isEmpty && removed.isEmpty }
}

/// The leader's backend tables, one per service (balancer.proto): where every node's load balancer listens for
/// the service and where it may send the traffic. Pure: it reads the states it is given and the changes it is
/// told about, so a store change costs the tables of the services it touched.
///
/// A table's version is the store's applied index at which its content last changed, so versions increase
/// with every change, stay put while nothing in the table changes, and mean the same on every controller (apply
/// is deterministic: the table at version v is the service's table in the state at index v).
public struct BackendTables: Sendable {
    /// The tables, by service id.
    public private(set) var tables: [String: Flotilla_V1_BackendTable] = [:]
    /// Services whose tables must be computed again at the next `refresh`.
    private var dirty: Set<String> = []
    private var everythingDirty = true
    /// Each known task's service, to find the table a deleted task was in.
    private var serviceOfTask: [String: String] = [:]
    /// Each node's address: a task sharing its node's network is reached there (see `address(of:in:)`).
    private var nodeAddresses: [NodeID: String] = [:]

    public init() {}

    /// Every table, sorted by service id: what an agent gets when its session opens.
    public var complete: [Flotilla_V1_BackendTable] {
        tables.values.sorted { $0.serviceID < $1.serviceID }
    }

    /// True when changes were noted that `refresh` has not computed yet.
    public var hasPendingChanges: Bool { everythingDirty || !dirty.isEmpty }

    /// Every table is computed again at the next `refresh` (at start, and when the state was replaced whole).
    /// Tables whose content turns out the same keep their versions.
    public mutating func invalidateAll() {
        everythingDirty = true
    }

    /// Notes the services one applied command's changes touch; `state` is the state after them.
    public mutating func note(_ changes: [StoreChange], in state: ClusterState) {
        guard !everythingDirty else { return }
        for change in changes {
            switch change.table {
            case .services:
                dirty.insert(change.key)
            case .tasks:
                if let service = state.task(change.key)?.serviceID ?? serviceOfTask[change.key] { dirty.insert(service) }
            case .nodes:
                // Only an address matters (a task on the host's network is reached there); then every table
                // is recomputed, which is rare.
                let id = NodeID(change.key)
                if state.node(id)?.address != nodeAddresses[id] { everythingDirty = true }
            default:
                continue
            }
        }
    }

    /// Computes the tables of the services noted since the last refresh from `state` and returns what changed.
    /// A table whose content changed gets `state.appliedIndex` as its version.
    public mutating func refresh(from state: ClusterState) -> BackendTableDelta {
        guard hasPendingChanges else { return BackendTableDelta() }
        if everythingDirty {
            nodeAddresses = Dictionary(uniqueKeysWithValues: state.nodes.map { ($0.id, $0.address) })
            dirty.formUnion(tables.keys)
            dirty.formUnion(state.services.map(\.id))
        }
        // One pass over the tasks: the dirty services' tasks, and every task's service for the next `note`.
        var tasks: [String: [Flotilla_V1_TaskRecord]] = [:]
        serviceOfTask = [:]
        for task in state.tasks {
            serviceOfTask[task.id] = task.serviceID
            if dirty.contains(task.serviceID) { tasks[task.serviceID, default: []].append(task) }
        }
        var delta = BackendTableDelta()
        for id in dirty.sorted() {
            guard let service = state.service(id) else {
                if tables.removeValue(forKey: id) != nil { delta.removed.append(id) }
                continue
            }
            var table = Self.table(for: service, tasks: tasks[id] ?? [], in: state, version: 0)
            var oldContent = tables[id]
            oldContent?.version = 0
            guard table != oldContent else { continue }
            table.version = state.appliedIndex
            tables[id] = table
            delta.changed.append(table)
        }
        dirty = []
        everythingDirty = false
        return delta
    }

    // MARK: - One table

    /// `service`'s table at `version`, from its tasks (any order; `state` gives the nodes' addresses).
    ///
    /// Backends are the tasks that run, are ready and have an address, sorted by task id. A task whose desired
    /// state is no longer running but that still runs and is ready is a backend with weight 0, draining: it
    /// gets no new connections, and the ones it has may finish. A service that autoscales with min 0 has
    /// `hold_when_empty`: the balancers hold connections while it has no backend.
    public static func table(
        for service: Flotilla_V1_ServiceRecord, tasks: [Flotilla_V1_TaskRecord], in state: ClusterState, version: UInt64
    ) -> Flotilla_V1_BackendTable {
        let spec = ServiceSpecRules.normalized(service.spec)
        var table = Flotilla_V1_BackendTable()
        table.serviceID = service.id
        table.serviceName = spec.name
        table.version = version
        table.mode = spec.lbMode
        table.policy = spec.lbPolicy
        table.virtualIp = service.virtualIp
        table.ports = spec.ports.map { port in
            var entry = Flotilla_V1_ServicePort()
            entry.publishedPort = port.publishedPort
            entry.targetPort = port.targetPort
            entry.protocol = ServiceSpecRules.effectiveProtocol(of: port, in: spec)
            return entry
        }
        table.settings = spec.loadBalancer
        // A service that may scale to zero is woken by the connections that find it empty.
        table.holdWhenEmpty = spec.hasAutoscale && spec.autoscale.min == 0
        table.backends = tasks
            .filter { $0.serviceID == service.id && $0.state == .running && $0.ready && !$0.address.isEmpty }
            .sorted { $0.id < $1.id }
            .map { task in
                var backend = Flotilla_V1_BackendEndpoint()
                backend.taskID = task.id
                backend.address = address(of: task, in: state)
                backend.nodeID = task.nodeID
                backend.draining = task.desiredState != .running
                backend.weight = backend.draining ? 0 : 1
                return backend
            }
        return table
    }

    /// Where other nodes reach a task: its reported address, except that a loopback host (a task sharing its
    /// node's network reports 127.0.0.1) becomes its node's address.
    static func address(of task: Flotilla_V1_TaskRecord, in state: ClusterState) -> String {
        guard let (host, port) = HostPort.parse(task.address), host == "127.0.0.1" || host == "::1" || host == "localhost",
              let node = state.node(NodeID(task.nodeID)), !node.address.isEmpty else { return task.address }
        return node.address.contains(":") ? "[\(node.address)]:\(port)" : "\(node.address):\(port)"
    }
}

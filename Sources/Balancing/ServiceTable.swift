/// One service as every node's load balancer serves it: the leader's backend table for it, at one version
/// (balancer.proto's `BackendTable`, in plain Swift so that the balancer needs no protobuf).
public struct ServiceTable: Sendable, Equatable {
    /// A port the balancer serves for the service.
    public struct Port: Sendable, Hashable {
        /// The port every node listens on; 0: the service is reached on its virtual IP only.
        public var published: Int
        /// The port the tasks listen on; the virtual IP serves the service on this port.
        public var target: Int
        /// The port's protocol: L4 bytes or L7 requests.
        public var mode: ProxyMode

        public init(published: Int, target: Int, mode: ProxyMode) {
            self.published = published
            self.target = target
            self.mode = mode
        }
    }

    /// How the balancer treats the service (service.proto's `LoadBalancerSpec`, defaults filled in).
    public struct Settings: Sendable, Equatable {
        /// Other backends a connection (http: an idempotent request) is tried on when its backend cannot be
        /// reached.
        public var retries: Int
        /// How long connecting to one backend may take before the next is tried.
        public var connectTimeout: Duration
        /// A connection with no bytes either way for this long is closed (http: also idle keep-alive ones).
        public var idleTimeout: Duration
        /// http: how long a backend may take to start its response.
        public var requestTimeout: Duration
        /// How long a draining backend's connections may finish.
        public var drainTimeout: Duration
        /// Send a PROXY protocol v2 header to backends.
        public var proxyProtocol: Bool
        /// At most this many connections (http: requests) at once to one backend; 0: no limit.
        public var maxConnections: Int
        /// A new backend's share grows from 10 % to full over this long; zero: at once.
        public var slowStart: Duration
        /// Prefer backends on this node while any of them can take the connection.
        public var preferLocal: Bool
        /// A table that holds connections while empty (`holdWhenEmpty`): how long one may wait for a backend...
        public var holdTimeout: Duration
        /// ... and how many may wait at once per port on this node (more are refused at once).
        public var holdQueueLimit: Int

        /// The leader's defaults (`LoadBalancerDefaults` in ClusterStore): 2 retries, 5 s to connect, 60 s idle,
        /// 30 s for a response, 10 s to drain, 30 s and 1024 connections held.
        public init(
            retries: Int = 2, connectTimeout: Duration = .seconds(5), idleTimeout: Duration = .seconds(60),
            requestTimeout: Duration = .seconds(30), drainTimeout: Duration = .seconds(10), proxyProtocol: Bool = false,
            maxConnections: Int = 0, slowStart: Duration = .zero, preferLocal: Bool = false,
            holdTimeout: Duration = .seconds(30), holdQueueLimit: Int = 1_024
        ) {
            self.retries = retries
            self.connectTimeout = connectTimeout
            self.idleTimeout = idleTimeout
            self.requestTimeout = requestTimeout
            self.drainTimeout = drainTimeout
            self.proxyProtocol = proxyProtocol
            self.maxConnections = maxConnections
            self.slowStart = slowStart
            self.preferLocal = preferLocal
            self.holdTimeout = holdTimeout
            self.holdQueueLimit = holdQueueLimit
        }
    }

    /// The service's id (what tables are keyed by) and name (what containers resolve).
    public var serviceID: String
    public var name: String
    /// Rises whenever the table's content changes (the leader's store index at which it did).
    public var version: UInt64
    /// The service's mode (its ports without a protocol of their own use it).
    public var mode: ProxyMode
    public var policy: BalancingPolicy
    /// The service's virtual IP ("10.96.0.1"); empty when it has none.
    public var virtualIP: String
    public var ports: [Port]
    public var settings: Settings
    /// Where traffic may go, in the leader's order (by task id). A backend of weight 0 is draining.
    public var backends: [Backend]
    /// The service scales from zero: while no backend takes new connections, new connections wait (within
    /// `settings.holdTimeout` and `settings.holdQueueLimit`) instead of being refused, and the node asks the
    /// leader for a replica.
    public var holdWhenEmpty: Bool

    public init(
        serviceID: String, name: String, version: UInt64, mode: ProxyMode = .tcp, policy: BalancingPolicy = .roundRobin,
        virtualIP: String = "", ports: [Port] = [], settings: Settings = Settings(), backends: [Backend] = [],
        holdWhenEmpty: Bool = false
    ) {
        self.serviceID = serviceID
        self.name = name
        self.version = version
        self.mode = mode
        self.policy = policy
        self.virtualIP = virtualIP
        self.ports = ports
        self.settings = settings
        self.backends = backends
        self.holdWhenEmpty = holdWhenEmpty
    }
}

/// Which services a table update added, changed or removed (service ids, each list sorted).
public struct TableSetChange: Sendable, Equatable {
    public var added: [String]
    public var changed: [String]
    public var removed: [String]

    public init(added: [String] = [], changed: [String] = [], removed: [String] = []) {
        self.added = added
        self.changed = changed
        self.removed = removed
    }

    public var isEmpty: Bool { added.isEmpty && changed.isEmpty && removed.isEmpty }
}

/// Every service's table as one node's balancer holds it. A value: an update makes a new set, which the
/// balancer swaps in whole (so a listener never sees half an update); the set it replaced stays valid for
/// whoever still reads it (connections already established keep their backends).
public struct ServiceTableSet: Sendable, Equatable {
    /// The tables, by service id.
    public private(set) var tables: [String: ServiceTable]

    public init(_ tables: [ServiceTable] = []) {
        self.tables = Dictionary(tables.map { ($0.serviceID, $0) }, uniquingKeysWith: { first, second in
            second.version >= first.version ? second : first
        })
    }

    /// The table of service `id`.
    public subscript(serviceID id: String) -> ServiceTable? { tables[id] }

    /// The table of the service named `name` (what a container's DNS query names).
    public func table(named name: String) -> ServiceTable? { tables.values.first { $0.name == name } }

    /// The table of the service whose virtual IP is `address`.
    public func table(virtualIP address: String) -> ServiceTable? {
        guard !address.isEmpty else { return nil }
        return tables.values.first { $0.virtualIP == address }
    }

    /// Every table, sorted by service id.
    public var sorted: [ServiceTable] { tables.values.sorted { $0.serviceID < $1.serviceID } }

    public var count: Int { tables.count }
    public var isEmpty: Bool { tables.isEmpty }

    /// Applies one update from the leader and says what it changed.
    ///
    /// - `complete`: `tables` are every service's tables; services not among them are removed (`removed` is
    ///   not consulted), whatever the versions.
    /// - Otherwise `tables` are new or changed tables: one whose version is not newer than the table held for
    ///   its service is ignored (a late or repeated update); then the services in `removed` are removed.
    ///
    /// A table equal to the one held counts as no change.
    @discardableResult
    public mutating func apply(complete: Bool, tables incoming: [ServiceTable], removed: [String]) -> TableSetChange {
        var change = TableSetChange()
        var next = complete ? [:] : tables
        for table in incoming {
            // Only a newer version replaces the table held (in a complete set: one listed twice keeps the newer).
            if let held = next[table.serviceID], held.version >= table.version { continue }
            next[table.serviceID] = table
        }
        if !complete {
            for id in removed { next[id] = nil }
        }
        for (id, table) in next {
            if let old = tables[id] {
                if old != table { change.changed.append(id) }
            } else {
                change.added.append(id)
            }
        }
        change.removed = tables.keys.filter { next[$0] == nil }
        change.added.sort()
        change.changed.sort()
        change.removed.sort()
        tables = next
        return change
    }
}

import ClusterModel
import ClusterStore
import Messages
import Orchestrator
import Testing

extension SimulatedCluster {
    /// The tasks' agents report them running with `ready`, each at its own address on the first port.
    mutating func reportReady(_ tasks: [Flotilla_V1_TaskRecord], ready: Bool = true, address: (Flotilla_V1_TaskRecord) -> String = { "10.240.0.\($0.slot + 10):8000" }) {
        for (node, group) in Dictionary(grouping: tasks, by: \.nodeID).sorted(by: { $0.key < $1.key }) {
            run(ClusterCommands.taskStatusReport(nodeID: NodeID(node), group.map { task in
                var status = Flotilla_V1_TaskStatus()
                status.taskID = task.id
                status.state = .running
                status.ready = ready
                status.address = address(task)
                status.atMs = now
                return status
            }))
        }
    }

    /// A service with a published port, through the spec normalization the admin API applies.
    mutating func createBalancedService(_ name: String, replicas: UInt32, ports: [(published: UInt32, target: UInt32, protocol: String)] = [(8080, 8000, "")],
                                        configure: (inout Flotilla_V1_ServiceSpec) -> Void = { _ in }) {
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = name
        spec.driver = "process"
        spec.command = "serve"
        spec.replicas = replicas
        spec.ports = ports.map { port in
            var entry = Flotilla_V1_PortSpec()
            entry.publishedPort = port.published
            entry.targetPort = port.target
            entry.protocol = port.protocol
            return entry
        }
        configure(&spec)
        var service = Flotilla_V1_ServiceRecord()
        service.id = "svc-\(name)"
        service.spec = ServiceSpecRules.normalized(spec)
        service.version = 1
        run(ClusterCommands.serviceCreate(service))
    }

    /// The tables the leader would compute from scratch now.
    var freshTables: [String: Flotilla_V1_BackendTable] {
        var tables = BackendTables()
        _ = tables.refresh(from: state)
        return tables.tables
    }
}

@Suite("Orchestrator: backend tables (what every node's load balancer is told)")
struct BackendTablesTests {
    static func withoutVersion(_ table: Flotilla_V1_BackendTable?) -> Flotilla_V1_BackendTable? {
        var table = table
        table?.version = 0
        return table
    }

    @Test("a table carries the service's name, mode, policy, virtual IP, ports (each with its protocol) and settings with defaults")
    func tableContent() throws {
        var cluster = SimulatedCluster(seed: 1)
        cluster.addNode("n1")
        cluster.createBalancedService("web", replicas: 1, ports: [(8080, 8000, ""), (0, 9000, "tcp")]) { spec in
            spec.lbMode = "http"
            spec.lbPolicy = "least-connections"
            spec.loadBalancer.retries = 0
            spec.loadBalancer.proxyProtocol = true
        }
        let table = try #require(cluster.freshTables["svc-web"])
        #expect(table.serviceName == "web")
        #expect(table.mode == "http")
        #expect(table.policy == "least-conn")
        #expect(table.virtualIp == "10.96.0.1")
        #expect(table.ports.map { "\($0.publishedPort):\($0.targetPort)/\($0.protocol)" } == ["8080:8000/http", "0:9000/tcp"])
        #expect(table.settings.hasRetries && table.settings.retries == 0)
        #expect(table.settings.proxyProtocol)
        #expect(table.settings.drainTimeoutMs == 10_000 && table.settings.connectTimeoutMs == 5_000)
        #expect(table.version == cluster.state.appliedIndex)
        #expect(!table.holdWhenEmpty, "a service that does not scale to zero is not held")
        #expect(table.settings.holdTimeoutMs == 30_000 && table.settings.holdQueueLimit == 1_024)
    }

    @Test("a service autoscaled with min 0 has hold_when_empty; with min 1 it does not")
    func holdWhenEmpty() throws {
        var cluster = SimulatedCluster(seed: 1)
        cluster.addNode("n1")
        for (name, min) in [("zero", UInt32(0)), ("one", 1)] {
            cluster.createBalancedService(name, replicas: 1) { spec in
                spec.autoscale.min = min
                spec.autoscale.max = 4
                spec.autoscale.targetRps = 100
                spec.loadBalancer.holdTimeoutMs = 5_000
            }
        }
        let tables = cluster.freshTables
        let zero = try #require(tables["svc-zero"])
        #expect(zero.holdWhenEmpty)
        #expect(zero.settings.holdTimeoutMs == 5_000 && zero.settings.holdQueueLimit == 1_024)
        #expect(try #require(tables["svc-one"]).holdWhenEmpty == false)
    }

    @Test("backends are the tasks that run, are ready and have an address, sorted by task id")
    func readyFiltering() throws {
        var cluster = SimulatedCluster(seed: 2)
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createBalancedService("web", replicas: 3)
        cluster.converge()
        // Running, but not ready yet: no backends.
        #expect(try #require(cluster.freshTables["svc-web"]).backends.isEmpty)
        let live = cluster.live("web").sorted { $0.slot < $1.slot }
        cluster.reportReady(Array(live.prefix(2)))
        cluster.reportReady([live[2]], ready: true, address: { _ in "" })  // ready but no port: no address
        var backends = try #require(cluster.freshTables["svc-web"]).backends
        #expect(backends.map(\.taskID) == live.prefix(2).map(\.id).sorted())
        #expect(backends.allSatisfy { $0.weight == 1 && !$0.draining })
        let first = try #require(backends.first { $0.taskID == live[0].id })
        #expect(first.address == "10.240.0.11:8000" && first.nodeID == live[0].nodeID)
        // One fails its readiness check: it leaves the table, without being restarted.
        cluster.reportReady([live[0]], ready: false)
        backends = try #require(cluster.freshTables["svc-web"]).backends
        #expect(backends.map(\.taskID) == [live[1].id])
    }

    @Test("a task leaving while it still runs and is ready drains: weight 0, no new connections; gone once it stopped")
    func draining() throws {
        var cluster = SimulatedCluster(seed: 3)
        cluster.addNode("n1")
        cluster.createBalancedService("web", replicas: 3)
        cluster.converge()
        cluster.reportReady(cluster.live("web"))
        cluster.scale("web", to: 1)
        _ = cluster.reconcileOnce()  // two tasks desired shutdown; their agent has not stopped them yet
        let backends = try #require(cluster.freshTables["svc-web"]).backends
        #expect(backends.count == 3)
        let leaving = backends.filter(\.draining)
        #expect(leaving.count == 2)
        #expect(leaving.allSatisfy { $0.weight == 0 })
        #expect(backends.filter { !$0.draining }.map(\.taskID) == cluster.live("web").map(\.id))
        cluster.agentsReport()  // the agent stopped them
        #expect(try #require(cluster.freshTables["svc-web"]).backends.map(\.taskID) == cluster.live("web").map(\.id))
    }

    @Test("a service without ports still has a table (its name resolves to its virtual IP); a removed one's table is removed")
    func portlessAndRemoved() throws {
        var cluster = SimulatedCluster(seed: 4)
        cluster.backendTables = BackendTables()
        cluster.addNode("n1")
        cluster.createBalancedService("worker", replicas: 1, ports: [])
        var delta = cluster.backendTables!.refresh(from: cluster.state)
        #expect(delta.changed.map(\.serviceName) == ["worker"])
        #expect(delta.changed.first?.ports.isEmpty == true)
        #expect(delta.changed.first?.virtualIp == "10.96.0.1")
        cluster.run(ClusterCommands.serviceRemove(id: "svc-worker"))
        delta = cluster.backendTables!.refresh(from: cluster.state)
        #expect(delta == BackendTableDelta(removed: ["svc-worker"]))
        #expect(cluster.backendTables!.complete.isEmpty)
    }

    @Test("a version rises with every change of content, and stays when nothing in the table changed")
    func versions() throws {
        var cluster = SimulatedCluster(seed: 5)
        cluster.backendTables = BackendTables()
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createBalancedService("web", replicas: 2)
        cluster.createBalancedService("api", replicas: 1, ports: [(9090, 9000, "")])
        cluster.converge()
        var tables = cluster.backendTables!
        _ = tables.refresh(from: cluster.state)
        let web1 = try #require(tables.tables["svc-web"]).version
        let api1 = try #require(tables.tables["svc-api"]).version
        #expect(web1 == cluster.state.appliedIndex && api1 == cluster.state.appliedIndex)

        // Changes that do not touch what a balancer needs: a message, a restart count, health while not ready,
        // the update status, a node's heartbeat status. No table changes; versions stay.
        cluster.backendTables = tables
        let task = cluster.live("web")[0]
        cluster.report(task, .running, restarts: 1, "restarted in place")
        let service = try #require(cluster.state.service(named: "web"))
        var status = Flotilla_V1_UpdateStatus()
        status.state = "completed"
        cluster.run(ClusterCommands.serviceStatusUpdate(id: service.id, version: service.version, status: status))
        cluster.setNode("n2", status: .ready)
        tables = cluster.backendTables!
        #expect(tables.refresh(from: cluster.state).isEmpty)
        #expect(tables.tables["svc-web"]?.version == web1)

        // A task becomes ready: web's table changes at the index of that report; api's does not.
        cluster.backendTables = tables
        cluster.reportReady([task])
        tables = cluster.backendTables!
        let delta = tables.refresh(from: cluster.state)
        #expect(delta.changed.map(\.serviceName) == ["web"])
        let web2 = try #require(tables.tables["svc-web"]).version
        #expect(web2 > web1 && web2 == cluster.state.appliedIndex)
        #expect(tables.tables["svc-api"]?.version == api1)

        // A settings change (no task replaced) is a change too.
        cluster.backendTables = tables
        var spec = service.spec
        spec.loadBalancer.drainTimeoutMs = 30_000
        cluster.run(ClusterCommands.serviceUpdate(id: service.id, spec: spec, expectedVersion: 0, nowMs: cluster.now))
        tables = cluster.backendTables!
        #expect(tables.refresh(from: cluster.state).changed.map(\.settings.drainTimeoutMs) == [30_000])
        #expect(try #require(tables.tables["svc-web"]).version > web2)

        // Starting over from the same state (a new leader) gives the same content.
        var fresh = BackendTables()
        _ = fresh.refresh(from: cluster.state)
        #expect(fresh.tables.mapValues(Self.withoutVersion) == tables.tables.mapValues(Self.withoutVersion))
    }

    @Test("a backend whose task record is deleted outright leaves the table")
    func deletedTask() throws {
        var cluster = SimulatedCluster(seed: 7)
        cluster.backendTables = BackendTables()
        cluster.addNode("n1")
        cluster.createBalancedService("web", replicas: 2)
        cluster.converge()
        cluster.reportReady(cluster.live("web"))
        var tables = cluster.backendTables!
        #expect(tables.refresh(from: cluster.state).changed.first?.backends.count == 2)
        cluster.backendTables = tables
        let gone = cluster.live("web")[0].id
        cluster.run(ClusterCommands.tasksWrite([], deleting: [gone]))
        tables = cluster.backendTables!
        #expect(tables.refresh(from: cluster.state).changed.first?.backends.map(\.taskID) == [cluster.live("web")[0].id])
    }

    @Test("a task on its node's network (loopback address) is reached at its node's address")
    func hostNetworkAddress() throws {
        var cluster = SimulatedCluster(seed: 6)
        cluster.addNode("n1")  // address 10.0.0.1
        cluster.createBalancedService("web", replicas: 1)
        cluster.converge()
        cluster.reportReady(cluster.live("web"), address: { _ in "127.0.0.1:41234" })
        #expect(try #require(cluster.freshTables["svc-web"]).backends.map(\.address) == ["10.0.0.1:41234"])
    }

    @Test("tables kept up to date change by change equal tables computed from scratch, whatever happens", arguments: [UInt64(11), 12, 13, 2026])
    func incrementalEqualsFromScratch(seed: UInt64) {
        var cluster = SimulatedCluster(seed: seed)
        cluster.backendTables = BackendTables()
        for id in ["n0", "n1", "n2"] { cluster.addNode(id) }
        cluster.createBalancedService("s0", replicas: 3)
        cluster.createBalancedService("g", replicas: 0, ports: [(0, 7000, "http")]) { $0.mode = .global; $0.replicas = 0 }
        var rng = SplitMix64(seed: seed)
        var lastVersions: [String: UInt64] = [:]
        for step in 0..<150 {
            cluster.randomEvent(&rng, nodeCount: 3, kinds: 8)
            cluster.now += 100
            _ = cluster.reconcileOnce()
            cluster.agentsReport()
            // Some of the running tasks become ready (or not), at addresses of their own.
            let running = cluster.state.tasks.filter { $0.state == .running && !$0.nodeID.isEmpty }
            let flipping = running.filter { _ in rng.next() % 3 == 0 }
            if !flipping.isEmpty { cluster.reportReady(flipping, ready: rng.next() % 4 != 0) }
            // A burst ends now and then (not after every command).
            guard rng.next() % 3 == 0 else { continue }
            var tables = cluster.backendTables!
            let delta = tables.refresh(from: cluster.state)
            cluster.backendTables = tables
            let fresh = cluster.freshTables
            #expect(tables.tables.mapValues(Self.withoutVersion) == fresh.mapValues(Self.withoutVersion), "seed \(seed), step \(step)")
            for table in delta.changed {
                #expect(table.version > lastVersions[table.serviceID] ?? 0, "seed \(seed), step \(step): \(table.serviceName)'s version did not rise")
                lastVersions[table.serviceID] = table.version
            }
            for (id, table) in tables.tables where !delta.changed.contains(where: { $0.serviceID == id }) {
                #expect(table.version == lastVersions[id], "seed \(seed), step \(step): \(id)'s version moved without a change")
            }
        }
    }
}

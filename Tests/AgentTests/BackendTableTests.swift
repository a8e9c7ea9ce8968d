@testable import Agent
import Balancing
import Messages
import Testing

@Suite("The agent's backend tables: the leader's tables converted for the balancer and applied whole")
struct BackendTableTests {
    static func proto(_ id: String, version: UInt64, backends: [(task: String, address: String, node: String, draining: Bool)]) -> Flotilla_V1_BackendTable {
        var table = Flotilla_V1_BackendTable()
        table.serviceID = id
        table.serviceName = "name-\(id)"
        table.version = version
        table.mode = "http"
        table.policy = "least-conn"
        table.virtualIp = "10.96.0.7"
        var port = Flotilla_V1_ServicePort()
        port.publishedPort = 8080
        port.targetPort = 80
        port.protocol = "tcp"
        table.ports = [port]
        table.settings.retries = 0
        table.settings.drainTimeoutMs = 2_500
        table.settings.backendMaxConnections = 40
        table.settings.preferLocal = true
        table.backends = backends.map { backend in
            var endpoint = Flotilla_V1_BackendEndpoint()
            endpoint.taskID = backend.task
            endpoint.address = backend.address
            endpoint.nodeID = backend.node
            endpoint.draining = backend.draining
            endpoint.weight = backend.draining ? 0 : 1
            return endpoint
        }
        return table
    }

    static func update(complete: Bool, _ tables: [Flotilla_V1_BackendTable], removed: [String] = []) -> Flotilla_V1_SessionUpdate {
        var update = Flotilla_V1_SessionUpdate()
        update.backendTablesComplete = complete
        update.backendTables = tables
        update.removedBackendTables = removed
        return update
    }

    @Test("a table converts field by field; backends on this node are local; unset settings take the defaults")
    func conversion() throws {
        var skipped: [String] = []
        let table = try ServiceTable(
            proto: Self.proto("s1", version: 9, backends: [("t1", "10.240.0.2:80", "n1", false), ("t2", "[fd00::2]:80", "n2", true)]),
            localNode: "n1", skipped: &skipped)
        #expect(skipped.isEmpty)
        #expect(table.serviceID == "s1" && table.name == "name-s1" && table.version == 9)
        #expect(table.mode == .http && table.policy == .leastConnections && table.virtualIP == "10.96.0.7")
        #expect(table.ports == [.init(published: 8080, target: 80, mode: .tcp)])
        #expect(table.settings.retries == 0, "an explicit 0: no retries")
        #expect(table.settings.drainTimeout == .milliseconds(2_500))
        #expect(table.settings.connectTimeout == .seconds(5), "unset: the default")
        #expect(table.settings.preferLocal && table.settings.maxConnections == 40)
        #expect(table.backends == [
            Backend(id: "t1", host: "10.240.0.2", port: 80, weight: 1, node: "n1", isLocal: true, maxConnections: 40),
            Backend(id: "t2", host: "fd00::2", port: 80, weight: 0, node: "n2", isLocal: false, maxConnections: 40),
        ])
        #expect(ServiceTable.Settings(proto: Flotilla_V1_LoadBalancerSpec()) == ServiceTable.Settings(), "an empty spec is all defaults")
        #expect(!table.holdWhenEmpty)
        #expect(table.settings.holdTimeout == .seconds(30) && table.settings.holdQueueLimit == 1_024, "unset: the defaults")
    }

    @Test("a table of a service scaled to zero converts with hold_when_empty and its hold settings")
    func holdConversion() throws {
        var proto = Self.proto("s1", version: 3, backends: [])
        proto.holdWhenEmpty = true
        proto.settings.holdTimeoutMs = 4_000
        proto.settings.holdQueueLimit = 8
        var skipped: [String] = []
        let table = try ServiceTable(proto: proto, localNode: "n1", skipped: &skipped)
        #expect(table.holdWhenEmpty && table.backends.isEmpty)
        #expect(table.settings.holdTimeout == .milliseconds(4_000) && table.settings.holdQueueLimit == 8)
    }

    @Test("a table from a newer Flotilla is refused by name; a backend without host:port is left out and named")
    func unusable() throws {
        var skipped: [String] = []
        var newer = Self.proto("s1", version: 1, backends: [])
        newer.policy = "ewma"
        #expect(throws: BackendTableError.self) { try ServiceTable(proto: newer, localNode: "n1", skipped: &skipped) }
        let table = try ServiceTable(proto: Self.proto("s1", version: 1, backends: [("t1", "nowhere", "n1", false)]), localNode: "n1", skipped: &skipped)
        #expect(table.backends.isEmpty)
        #expect(skipped == ["t1 at 'nowhere'"])
    }

    @Test("the holder applies complete sets and changes whole, keeps a table it cannot read, and ignores updates without tables")
    func holder() throws {
        let holder = BackendTableHolder()
        var problems: [String] = []
        #expect(holder.apply(Flotilla_V1_SessionUpdate(), localNode: "n1", problems: &problems) == nil)
        let first = holder.apply(Self.update(complete: true, [Self.proto("a", version: 5, backends: []), Self.proto("b", version: 5, backends: [])]),
                                 localNode: "n1", problems: &problems)
        #expect(first?.0 == TableSetChange(added: ["a", "b"]))
        #expect(first?.1.sorted.map(\.serviceID) == ["a", "b"])

        let change = holder.apply(Self.update(complete: false, [Self.proto("a", version: 7, backends: [("t1", "10.240.0.2:80", "n1", false)])], removed: ["b"]),
                                  localNode: "n1", problems: &problems)
        #expect(change?.0 == TableSetChange(changed: ["a"], removed: ["b"]))
        #expect(holder.current[serviceID: "a"]?.backends.map(\.id) == ["t1"])

        // A complete set whose table for "a" this agent cannot read keeps the "a" it has.
        var unreadable = Self.proto("a", version: 9, backends: [])
        unreadable.mode = "quic"
        let kept = holder.apply(Self.update(complete: true, [unreadable, Self.proto("c", version: 9, backends: [])]), localNode: "n1", problems: &problems)
        #expect(kept?.0 == TableSetChange(added: ["c"]))
        #expect(holder.current[serviceID: "a"]?.version == 7)
        #expect(problems.count == 1 && problems[0].contains("quic"))
    }
}

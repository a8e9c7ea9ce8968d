import ClusterModel
import ClusterStore
@testable import Controller
import Messages
import Orchestrator
import Raft
import Testing

/// The dispatcher's share of the backend tables, against a store driven by hand: the complete set with the
/// session's first update, one table update per burst of store changes, the complete set again on a resync.
@Suite("Dispatcher: backend tables")
struct TableDispatchTests {
    /// A store with a node and a service of `replicas` tasks placed on it and running (not ready).
    static func store(replicas: Int) throws -> (StoreApplication, [String]) {
        let store = StoreApplication()
        var index: UInt64 = 0
        func run(_ command: [UInt8]) throws {
            index += 1
            let result = StoreResultCodec.decode(try store.apply(index: LogIndex(index), command: command))
            if case .invalid(let why)? = result { Issue.record("refused: \(why)") }
        }
        try run(ClusterCommands.tokenCreate(JoinTokenRecord(
            id: "tokaaaaa", role: .agent, secretSHA256: [UInt8](repeating: 1, count: 32), createdAtMs: 0, expiresAtMs: .max)))
        let node = NodeRecord(id: NodeID("n1"), name: "n1", address: "10.0.0.1", status: .ready, joinedAtMs: 1)
        try run(ClusterCommands.nodeJoin(tokenID: "tokaaaaa", nowMs: 1, nodeID: NodeID("n1"), role: .agent, node: node))
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = "web"
        spec.driver = "process"
        spec.command = "serve"
        spec.replicas = UInt32(replicas)
        var port = Flotilla_V1_PortSpec()
        port.targetPort = 8000
        spec.ports = [port]
        var service = Flotilla_V1_ServiceRecord()
        service.id = "svc-web"
        service.spec = ServiceSpecRules.normalized(spec)
        service.version = 1
        try run(ClusterCommands.serviceCreate(service))
        let ids = (1...replicas).map { "task-\($0)" }
        try run(ClusterCommands.tasksWrite(ids.enumerated().map { offset, id in
            var task = Flotilla_V1_TaskRecord()
            task.id = id
            task.serviceID = "svc-web"
            task.serviceVersion = 1
            task.slot = UInt32(offset + 1)
            task.nodeID = "n1"
            task.desiredState = .running
            task.state = .running
            return task
        }))
        return (store, ids)
    }

    static func readyReport(_ id: String, port: Int) -> [UInt8] {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = id
        status.state = .running
        status.ready = true
        status.address = "10.240.0.9:\(port)"
        return ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [status])
    }

    @Test("a session starts with every table; a burst of changes gives one table update holding all of them; a resync sends every table again")
    func burstAndResync() async throws {
        let (store, ids) = try Self.store(replicas: 5)
        let dispatcher = AssignmentDispatcher(store: store)
        let watch = store.watch.subscribe()
        let session = dispatcher.open(for: NodeID("n1"))
        guard case .complete(let assignments, let tables)? = await session.next() else {
            Issue.record("the first update is not the complete set")
            return
        }
        #expect(assignments.count == 5)
        #expect(tables.map(\.serviceName) == ["web"])
        #expect(tables.first?.backends.isEmpty == true)
        let openedAt = try #require(tables.first?.version)

        // A burst: every task becomes ready, one report each, while the dispatcher is not reading yet.
        var index = store.read { $0.appliedIndex }
        for (offset, id) in ids.enumerated() {
            index += 1
            _ = try store.apply(index: LogIndex(index), command: Self.readyReport(id, port: 9000 + offset))
        }
        let running = Task { await dispatcher.run(watching: watch) }
        defer { running.cancel() }
        var tableUpdates: [BackendTableDelta] = []
        while tableUpdates.isEmpty, let next = await session.next() {
            if case .tables(let delta) = next { tableUpdates.append(delta) }
        }
        let delta = try #require(tableUpdates.first)
        #expect(delta.removed.isEmpty)
        #expect(delta.changed.first?.backends.map { $0.taskID } == ids, "the one update holds the whole burst")
        #expect(delta.changed.first?.version == index)
        #expect(index > openedAt)

        session.resync()
        guard case .complete(_, let again)? = await session.next() else {
            Issue.record("a resync does not send the complete set")
            return
        }
        #expect(again == delta.changed)
        session.end()
    }
}

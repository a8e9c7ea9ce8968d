import ClusterModel
import ClusterStore
import Messages
import SwiftProtobuf
import Testing

@Suite("Cluster events derived by the store")
struct EventTests {
    typealias Nodes = NodeAndTokenTableTests
    typealias Services = ServiceTableTests

    /// The events `command` added, as "type subject: message".
    static func added(_ log: inout Log, _ command: [UInt8]) throws -> [String] {
        let before = log.state.lastEventID
        try log.run(command)
        return log.state.events(after: before).map(describe)
    }

    static func describe(_ event: Flotilla_V1_ClusterEvent) -> String {
        let subject = [event.serviceName, event.taskID, event.nodeName].filter { !$0.isEmpty }.joined(separator: " ")
        return "\(event.type) \(subject): \(event.message)"
    }

    /// Two agents, node-1 and node-2, both ready.
    static func twoReadyNodes() throws -> Log {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Nodes.token()))
        for id in ["n1", "n2"] {
            try log.run(Nodes.join(id: id, name: "node-\(id.dropFirst())"))
            var node = try #require(log.state.node(NodeID(id)))
            node.status = .ready
            try log.run(ClusterCommands.nodeUpsert(node))
        }
        return log
    }

    static func status(_ task: String, _ state: Flotilla_V1_TaskState, message: String = "", exitCode: Int32 = 0, restarts: UInt32 = 0) -> Flotilla_V1_TaskStatus {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = task
        status.state = state
        status.message = message
        status.exitCode = exitCode
        status.restarts = restarts
        status.atMs = 9_000
        return status
    }

    @Test("nodes: joined, ready, drained, active, down, removed; a repeated state makes none")
    func nodeEvents() throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Nodes.token()))
        #expect(try Self.added(&log, Nodes.join(id: "n1", name: "node-1")) == ["node.joined node-1: joined at 10.0.0.7"])
        var node = try #require(log.state.node(NodeID("n1")))
        node.status = .ready
        #expect(try Self.added(&log, ClusterCommands.nodeUpsert(node)) == ["node.ready node-1: heartbeating"])
        #expect(try Self.added(&log, ClusterCommands.nodeUpsert(node)) == [])
        node.labels["disk"] = "ssd"
        #expect(try Self.added(&log, ClusterCommands.nodeUpsert(node)) == [])
        node.availability = .drain
        #expect(try Self.added(&log, ClusterCommands.nodeUpsert(node)) == ["node.drained node-1: draining: its tasks move to other nodes"])
        node.availability = .active
        #expect(try Self.added(&log, ClusterCommands.nodeUpsert(node)) == ["node.active node-1: active: takes new tasks (was drain)"])
        node.status = .down
        #expect(try Self.added(&log, ClusterCommands.nodeUpsert(node)) == ["node.down node-1: missed its heartbeats; its tasks are replaced elsewhere"])
        #expect(try Self.added(&log, ClusterCommands.nodeRemove(id: NodeID("n1"), nowMs: 5_000)) == ["node.removed node-1: removed from the cluster; its identity is revoked"])
        #expect(try Self.added(&log, ClusterCommands.nodeRemove(id: NodeID("n1"), nowMs: 6_000)) == [])
        // A refused join makes no event.
        #expect(try Self.added(&log, Nodes.join("tok-none", id: "n9")) == [])
    }

    @Test("controllers: joined and removed; a changed address makes none")
    func controllerEvents() throws {
        var log = Log()
        #expect(try Self.added(&log, ClusterCommands.controllerUpsert(ControllerRecord(id: NodeID("c1"), address: "h1:7400", isVoter: false)))
            == ["controller.joined c1: joined at h1:7400"])
        #expect(try Self.added(&log, ClusterCommands.controllerUpsert(ControllerRecord(id: NodeID("c1"), address: "h1:7400", isVoter: true))) == [])
        #expect(try Self.added(&log, ClusterCommands.controllerRemove(id: NodeID("c1"))) == ["controller.removed c1: removed from the cluster"])
    }

    @Test("services: created, updated, scaled by an admin or the autoscaler, rolled back, removed; refused commands make none")
    func serviceEvents() throws {
        var log = Log()
        #expect(try Self.added(&log, ClusterCommands.serviceCreate(Services.service())) == ["service.created hello: created (3 replicas)"])
        var spec = try #require(log.state.service("svc-hello")).spec
        spec.replicas = 5
        #expect(try Self.added(&log, ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 1, nowMs: 2_000))
            == ["service.scaled hello: scaled 3 → 5 by an admin"])
        spec.env = [Flotilla_V1_EnvVar.with { $0.name = "A"; $0.value = "1" }]
        #expect(try Self.added(&log, ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 2, nowMs: 3_000))
            == ["service.updated hello: updated to version 3"])
        // A stale write is refused and says nothing.
        #expect(try Self.added(&log, ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 1, nowMs: 3_500)) == [])
        #expect(try Self.added(&log, ClusterCommands.serviceScale(id: "svc-hello", expectedVersion: 3, replicas: 7, reason: "rps 820/replica > target 200 → 5 → 7 replicas", nowMs: 4_000))
            == ["service.scaled hello: rps 820/replica > target 200 → 5 → 7 replicas"])
        let previous = try #require(log.state.service("svc-hello")).previousSpec
        #expect(try Self.added(&log, ClusterCommands.serviceUpdate(id: "svc-hello", spec: previous, expectedVersion: 4, nowMs: 5_000, rollback: true))
            == ["service.rolled-back hello: rolling back to its previous spec (version 5): rolled back on request"])
        #expect(try Self.added(&log, ClusterCommands.serviceRemove(id: "svc-hello")) == ["service.removed hello: removed"])
        #expect(try Self.added(&log, ClusterCommands.serviceRemove(id: "svc-hello")) == [])
    }

    @Test("tasks: assigned, started, restarted, failed, stopped; a repeated report makes none")
    func taskEvents() throws {
        var log = try Self.twoReadyNodes()
        try log.run(ClusterCommands.serviceCreate(Services.service(replicas: 1)))
        #expect(try Self.added(&log, ClusterCommands.tasksWrite([Services.task("task-1", slot: 1)])) == [])
        #expect(try Self.added(&log, ClusterCommands.tasksWrite([Services.task("task-1", slot: 1, node: "n1")]))
            == ["task.assigned hello task-1 node-1: slot 1 on node-1"])
        let running = ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [Self.status("task-1", .running)])
        #expect(try Self.added(&log, running) == ["task.started hello task-1 node-1: running on node-1"])
        #expect(try Self.added(&log, running) == [])
        #expect(try Self.added(&log, ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [Self.status("task-1", .running, message: "exited with code 3", restarts: 1)]))
            == ["task.restarted hello task-1 node-1: restarted in place (1 in all): exited with code 3"])
        // Reports from another node about the task are ignored, and so make no event.
        #expect(try Self.added(&log, ClusterCommands.taskStatusReport(nodeID: NodeID("n2"), [Self.status("task-1", .failed)])) == [])
        #expect(try Self.added(&log, ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [Self.status("task-1", .failed, message: "out of memory", exitCode: 137, restarts: 1)]))
            == ["task.failed hello task-1 node-1: exited with code 137: out of memory"])
        var stopped = try #require(log.state.task("task-1"))
        stopped.desiredState = .shutdown
        #expect(try Self.added(&log, ClusterCommands.tasksWrite([stopped])) == [])
        try log.run(ClusterCommands.tasksWrite([Services.task("task-2", slot: 1, node: "n2")]))
        try log.run(ClusterCommands.taskStatusReport(nodeID: NodeID("n2"), [Self.status("task-2", .running)]))
        #expect(try Self.added(&log, ClusterCommands.taskStatusReport(nodeID: NodeID("n2"), [Self.status("task-2", .shutdown, message: "stopped on request")]))
            == ["task.stopped hello task-2 node-2: shut down: stopped on request"])
    }

    @Test("a node lost: node.down, its task orphaned, the replacement assigned (rescheduled from the down node) and started on the new node")
    func nodeLossAndRescheduling() throws {
        var log = try Self.twoReadyNodes()
        try log.run(ClusterCommands.serviceCreate(Services.service(replicas: 1)))
        try log.run(ClusterCommands.tasksWrite([Services.task("task-1", slot: 1, node: "n2")]))
        try log.run(ClusterCommands.taskStatusReport(nodeID: NodeID("n2"), [Self.status("task-1", .running)]))
        let start = log.state.lastEventID
        // What the node monitor writes when node-2 misses its heartbeats.
        var lost = try #require(log.state.node(NodeID("n2")))
        lost.status = .down
        try log.run(ClusterCommands.nodeUpsert(lost))
        // What the orchestrator writes next: the old task orphaned, a new one in its slot on node-1.
        var orphaned = try #require(log.state.task("task-1"))
        orphaned.desiredState = .shutdown
        orphaned.state = .orphaned
        orphaned.message = "node node-2 is down"
        try log.run(ClusterCommands.tasksWrite([orphaned, Services.task("task-2", slot: 1, node: "n1")]))
        try log.run(ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [Self.status("task-2", .running)]))
        #expect(log.state.events(after: start).map(Self.describe) == [
            "node.down node-2: missed its heartbeats; its tasks are replaced elsewhere",
            "task.stopped hello task-1 node-2: orphaned: node node-2 is down",
            "task.assigned hello task-2 node-1: slot 1 on node-1, rescheduled from node-2 (down)",
            "task.started hello task-2 node-1: running on node-1",
        ])
        let started = try #require(log.state.events.last)
        #expect(started.nodeID == "n1")
        #expect(started.serviceID == "svc-hello")
        #expect(started.taskID == "task-2")
    }

    @Test("EventAppend records its event with the next id, the entry's index and the proposal's time")
    func eventAppend() throws {
        var log = Log()
        var event = Flotilla_V1_ClusterEvent()
        event.type = "leader.elected"
        event.nodeID = "c1"
        event.nodeName = "c1"
        event.message = "c1 elected in term 7"
        event.id = 99  // the store's to give
        let outcome = try log.run(ClusterCommands.stamped(ClusterCommands.eventAppend(event), proposedAtMs: 1_234))
        #expect(outcome.result == .ok(index: 1))
        #expect(outcome.changes == [StoreChange(table: .events, key: "1", kind: .put, index: 1)])
        let recorded = try #require(log.state.events.first)
        #expect(recorded.id == 1 && recorded.index == 1 && recorded.atMs == 1_234)
        #expect(recorded.type == "leader.elected" && recorded.message == "c1 elected in term 7")
        // An event's own time wins over the proposal's.
        event.atMs = 500
        try log.run(ClusterCommands.stamped(ClusterCommands.eventAppend(event), proposedAtMs: 1_300))
        #expect(log.state.events.last?.atMs == 500)
        #expect(log.state.events.last?.id == 2)
        // Not an event: refused, and nothing recorded.
        event.type = "Leader Elected"
        guard case .invalid(let why) = try log.run(ClusterCommands.eventAppend(event)).result else {
            Issue.record("an event type with capitals and a space was accepted")
            return
        }
        #expect(why.contains("lowercase"))
        #expect(try log.run(ClusterCommands.envelopeWithEmptyEventAppend()).result == .invalid("an EventAppend command must carry an event"))
        #expect(log.state.lastEventID == 2)
    }

    @Test("derived events take the proposal's time, or the command's own time when it was not stamped")
    func eventTimes() throws {
        var log = Log()
        try log.run(ClusterCommands.stamped(ClusterCommands.serviceCreate(Services.service()), proposedAtMs: 7_000))
        #expect(log.state.events.last?.atMs == 7_000)
        var spec = try #require(log.state.service("svc-hello")).spec
        spec.replicas = 1
        try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 1, nowMs: 8_000))
        #expect(log.state.events.last?.atMs == 8_000)
        #expect(log.state.events.map(\.index) == [1, 2])
    }

    @Test("the history keeps the latest 1,000 events; ids go on counting and readers learn what they missed")
    func bounded() throws {
        var log = Log()
        var event = Flotilla_V1_ClusterEvent()
        event.type = "leader.elected"
        var last: ApplyOutcome?
        for _ in 0..<1_005 { last = try log.run(ClusterCommands.eventAppend(event)) }
        #expect(log.state.events.count == ClusterState.eventsKept)
        #expect(log.state.lastEventID == 1_005)
        #expect(log.state.events.first?.id == 6)
        #expect(log.state.events.map(\.id) == Array(6...1_005))
        #expect(last?.changes == [
            StoreChange(table: .events, key: "5", kind: .delete, index: 1_005),
            StoreChange(table: .events, key: "1005", kind: .put, index: 1_005),
        ])
        #expect(log.state.events(after: 0).count == 1_000)
        #expect(log.state.events(after: 3).first?.id == 6)
        #expect(log.state.eventsDropped(after: 3) == 2)
        #expect(log.state.eventsDropped(after: 5) == 0)
        #expect(log.state.events(after: 1_000).map(\.id) == Array(1_001...1_005))
        #expect(log.state.events(after: 1_005).isEmpty)
        #expect(log.state.events(after: 5_000).isEmpty)
        #expect(log.state.events(after: .max).isEmpty && log.state.eventsDropped(after: .max) == 0)
        #expect(ClusterState().events(after: .max).isEmpty && ClusterState().eventsDropped(after: .max) == 0)
        // Survives a snapshot, and goes on from there.
        var restored = Log(state: try ClusterState(snapshot: log.state.snapshot()))
        #expect(restored.state == log.state)
        try restored.run(ClusterCommands.eventAppend(event))
        #expect(restored.state.events.last?.id == 1_006)
        #expect(restored.state.events.first?.id == 7)
    }

    @Test("a snapshot keeps the events byte for byte, sorted by id, and refuses a history with a gap or an unknown field")
    func snapshots() throws {
        var log = try Self.twoReadyNodes()
        try log.run(ClusterCommands.serviceCreate(Services.service()))
        let bytes = log.state.snapshot()
        let restored = try ClusterState(snapshot: bytes)
        #expect(restored == log.state)
        #expect(restored.snapshot() == bytes)
        var decoded = try Flotilla_V1_ClusterSnapshot(serializedBytes: bytes)
        #expect(decoded.formatVersion == 5)
        #expect(decoded.events.map(\.id) == Array(1...decoded.lastEventID))
        // Read in any order, written sorted.
        decoded.events.reverse()
        #expect(try ClusterState(snapshot: decoded.serializedBytes()).snapshot() == bytes)
        var gap = decoded
        gap.events.remove(at: 1)
        #expect(throws: StoreError.self) { try ClusterState(snapshot: gap.serializedBytes()) }
        var ahead = decoded
        ahead.lastEventID += 1
        #expect(throws: StoreError.self) { try ClusterState(snapshot: ahead.serializedBytes()) }
        var newer = decoded
        newer.events[0] = try Flotilla_V1_ClusterEvent(serializedBytes: try newer.events[0].serializedBytes() + RawProtobuf.varintField(field: 40, 1))
        #expect(throws: StoreError(code: .newerSnapshot, message: "this controller (snapshot format 5) cannot read a snapshot that carries field 40 of ClusterEvent, which this version does not know; upgrade it")) {
            try ClusterState(snapshot: newer.serializedBytes())
        }
    }

    @Test("filters: time, types (a word without a dot is a prefix), service and node by name or id")
    func filters() {
        var event = Flotilla_V1_ClusterEvent()
        event.type = "task.failed"
        event.atMs = 5_000
        event.serviceID = "svc-hello"
        event.serviceName = "hello"
        event.nodeID = "n1"
        event.nodeName = "node-1"
        #expect(EventFilter().matches(event))
        #expect(EventFilter(sinceMs: 5_000).matches(event))
        #expect(!EventFilter(sinceMs: 5_001).matches(event))
        #expect(EventFilter(types: ["task"]).matches(event))
        #expect(EventFilter(types: ["node", "task.failed"]).matches(event))
        #expect(!EventFilter(types: ["task.fail"]).matches(event))
        #expect(!EventFilter(types: ["tas"]).matches(event))
        #expect(EventFilter(service: "hello").matches(event) && EventFilter(service: "svc-hello").matches(event))
        #expect(!EventFilter(service: "web").matches(event))
        #expect(EventFilter(node: "node-1").matches(event) && EventFilter(node: "n1").matches(event))
        #expect(!EventFilter(node: "n2").matches(event))
    }
}

extension ClusterCommands {
    /// An EventAppend without its event (what a broken or hostile proposer could send).
    static func envelopeWithEmptyEventAppend() -> [UInt8] {
        var command = Flotilla_V1_ClusterCommand()
        command.command = .eventAppend(Flotilla_V1_EventAppend())
        return (try? command.serializedBytes()) ?? []
    }
}

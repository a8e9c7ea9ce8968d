import ClusterModel
import ClusterStore
import Messages
import Testing

@Suite("Services and tasks in the store")
struct ServiceTableTests {
    static func service(_ id: String = "svc-hello", replicas: UInt32 = 3) -> Flotilla_V1_ServiceRecord {
        var record = Flotilla_V1_ServiceRecord()
        record.id = id
        var spec = ServiceSpecTests.valid()
        spec.replicas = replicas
        record.spec = ServiceSpecRules.normalized(spec)
        record.version = 1
        record.createdAtMs = 1_000
        return record
    }

    static func task(_ id: String, service: String = "svc-hello", version: UInt64 = 1, slot: UInt32, node: String = "") -> Flotilla_V1_TaskRecord {
        var task = Flotilla_V1_TaskRecord()
        task.id = id
        task.serviceID = service
        task.serviceVersion = version
        task.slot = slot
        task.nodeID = node
        task.desiredState = .running
        task.state = node.isEmpty ? .pending : .assigned
        return task
    }

    @Test("create, update (a new version, the old spec kept), compare-and-set on the version, rollback, remove")
    func serviceLifecycle() throws {
        var log = Log()
        #expect(try log.run(ClusterCommands.serviceCreate(Self.service())).changes.map(\.table) == [.services, .events])
        #expect(log.state.service(named: "hello")?.version == 1)
        var spec = try #require(log.state.service("svc-hello")).spec
        spec.replicas = 5
        #expect(try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 1, nowMs: 2_000)).result == .ok(index: 2))
        let updated = try #require(log.state.service("svc-hello"))
        #expect(updated.version == 2)
        #expect(updated.spec.replicas == 5)
        #expect(updated.previousSpec.replicas == 3)
        #expect(updated.updateStatus.state == "updating")
        // A writer that read version 1 loses.
        #expect(try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 1, nowMs: 3_000)).result == .casFailed(currentIndex: 2))
        // Rollback: the previous spec becomes current, at a new version.
        let rollback = try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: updated.previousSpec, expectedVersion: 2, nowMs: 4_000, rollback: true))
        #expect(rollback.result == .ok(index: 4))
        #expect(log.state.service("svc-hello")?.spec.replicas == 3)
        #expect(log.state.service("svc-hello")?.version == 3)
        #expect(log.state.service("svc-hello")?.updateStatus.state == "rolling-back")
        #expect(try log.run(ClusterCommands.serviceRemove(id: "svc-hello")).changes.map(\.kind) == [.delete, .put])  // the row, its event
        #expect(try log.run(ClusterCommands.serviceRemove(id: "svc-hello")).result == .notFound)
    }

    @Test("a scale changes only the count, at a new version, keeps the decision, and a rollback does not undo it")
    func autoscaleDecisions() throws {
        var log = Log()
        _ = try log.run(ClusterCommands.serviceCreate(Self.service()))
        var spec = try #require(log.state.service("svc-hello")).spec
        spec.env = [Flotilla_V1_EnvVar.with { $0.name = "A"; $0.value = "1" }]
        _ = try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: spec, expectedVersion: 1, nowMs: 2_000))
        let scale = try log.run(ClusterCommands.serviceScale(
            id: "svc-hello", expectedVersion: 2, replicas: 7, reason: "rps 820/replica > target 200 → 3 → 7 replicas", nowMs: 3_000))
        #expect(scale.result == .ok(index: 3))
        #expect(scale.changes.map(\.table) == [.services, .events])
        let scaled = try #require(log.state.service("svc-hello"))
        #expect(scaled.version == 3)
        #expect(scaled.spec.replicas == 7)
        #expect(scaled.spec.env.map(\.name) == ["A"])
        #expect(scaled.previousSpec.replicas == 7)
        #expect(scaled.previousSpec.env.isEmpty)
        #expect(scaled.updateStatus.state == "updating")
        #expect(scaled.autoscaleDecisions.map(\.to) == [7])
        #expect(scaled.autoscaleDecisions.first?.from == 3)
        #expect(scaled.autoscaleDecisions.first?.reason.hasPrefix("rps 820") == true)
        // A decision made on an older version never lands.
        #expect(try log.run(ClusterCommands.serviceScale(id: "svc-hello", expectedVersion: 2, replicas: 9, reason: "x", nowMs: 4_000)).result
            == .casFailed(currentIndex: 3))
        #expect(try log.run(ClusterCommands.serviceScale(id: "svc-gone", expectedVersion: 1, replicas: 9, reason: "x", nowMs: 4_000)).result == .notFound)
        // Only the last ten decisions are kept.
        for step in 0..<12 {
            let version = try #require(log.state.service("svc-hello")).version
            _ = try log.run(ClusterCommands.serviceScale(id: "svc-hello", expectedVersion: version, replicas: UInt32(1 + step), reason: "step \(step)", nowMs: 5_000))
        }
        let decisions = try #require(log.state.service("svc-hello")).autoscaleDecisions
        #expect(decisions.count == 10)
        #expect(decisions.first?.reason == "step 2")
        #expect(decisions.last?.to == 12)
        // The rollback restores the environment, not the count.
        let current = try #require(log.state.service("svc-hello"))
        _ = try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: current.previousSpec, expectedVersion: current.version, nowMs: 6_000, rollback: true))
        #expect(log.state.service("svc-hello")?.spec.replicas == 12)
        #expect(log.state.service("svc-hello")?.spec.env.isEmpty == true)
    }

    @Test("a command stamped with its proposal time decodes with the time and applies as before")
    func stampedCommand() throws {
        var log = Log()
        let stamped = ClusterCommands.stamped(ClusterCommands.serviceCreate(Self.service()), proposedAtMs: 1_764_000_000_123)
        let decoded = try Flotilla_V1_ClusterCommand(serializedBytes: stamped)
        #expect(decoded.proposedAtMs == 1_764_000_000_123)
        #expect(decoded.serviceCreate.service.id == "svc-hello")
        #expect(try log.run(stamped).result == .ok(index: 1))
    }

    @Test("duplicate names, renames, invalid specs and unknown versions are refused with a reason")
    func serviceRefusals() throws {
        var log = Log()
        try log.run(ClusterCommands.serviceCreate(Self.service()))
        func refusal(_ outcome: ApplyOutcome) -> String? { if case .invalid(let why) = outcome.result { why } else { nil } }
        #expect(refusal(try log.run(ClusterCommands.serviceCreate(Self.service("svc-other"))))?.contains("already exists") == true)
        var renamed = Self.service().spec
        renamed.name = "renamed"
        #expect(refusal(try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: renamed, expectedVersion: 0, nowMs: 1)))?.contains("cannot be renamed") == true)
        var broken = Self.service().spec
        broken.ports[0].publishedPort = 70_000
        #expect(refusal(try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: broken, expectedVersion: 0, nowMs: 1)))?.contains("ports[0].published_port") == true)
        #expect(refusal(try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: Self.service().spec, expectedVersion: 0, nowMs: 1, rollback: true)))?.contains("no previous spec") == true)
    }

    @Test("a plan is written whole or not at all, and a stale plan is refused")
    func tasksWrite() throws {
        var log = Log()
        try log.run(ClusterCommands.serviceCreate(Self.service()))
        let plan = (1...3).map { Self.task("task-\($0)", slot: UInt32($0)) }
        #expect(try log.run(ClusterCommands.tasksWrite(plan)).changes.count == 3)
        #expect(log.state.tasks(ofService: "svc-hello").map(\.slot) == [1, 2, 3])
        // The service moves to version 2; a plan made for version 1 that creates a task is stale.
        try log.run(ClusterCommands.serviceUpdate(id: "svc-hello", spec: Self.service().spec, expectedVersion: 1, nowMs: 5))
        let stale = try log.run(ClusterCommands.tasksWrite([Self.task("task-4", slot: 4), Self.task("task-5", version: 2, slot: 5)]))
        guard case .invalid(let why) = stale.result else { Issue.record("stale plan applied"); return }
        #expect(why.contains("stale plan"))
        #expect(log.state.task("task-5") == nil, "nothing of a refused plan is written")
        // Deleting and rewriting in one plan.
        var stopped = plan[0]
        stopped.desiredState = .shutdown
        let outcome = try log.run(ClusterCommands.tasksWrite([stopped, Self.task("task-6", version: 2, slot: 1)], deleting: ["task-2"]))
        #expect(outcome.result == .ok(index: outcome.index))
        #expect(log.state.task("task-2") == nil)
        #expect(log.state.task("task-1")?.desiredState == .shutdown)
        #expect(log.state.task("task-6")?.serviceVersion == 2)
    }

    @Test("agents report only their own tasks; the report changes state, message and exit code")
    func statusReports() throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(NodeAndTokenTableTests.token()))
        try log.run(NodeAndTokenTableTests.join(id: "n1"))
        try log.run(ClusterCommands.serviceCreate(Self.service()))
        try log.run(ClusterCommands.tasksWrite([Self.task("task-1", slot: 1, node: "n1")]))
        var running = Flotilla_V1_TaskStatus()
        running.taskID = "task-1"
        running.state = .running
        running.atMs = 9_000
        #expect(try log.run(ClusterCommands.taskStatusReport(nodeID: NodeID("n2"), [running])).changes.isEmpty)
        #expect(try log.run(ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [running])).changes.map(\.table) == [.tasks, .events])
        #expect(log.state.task("task-1")?.state == .running)
        #expect(log.state.task("task-1")?.stateChangedAtMs == 9_000)
    }

    @Test("services and tasks survive a snapshot round trip byte for byte")
    func snapshot() throws {
        var log = Log()
        try log.run(ClusterCommands.serviceCreate(Self.service()))
        try log.run(ClusterCommands.tasksWrite((1...3).map { Self.task("task-\($0)", slot: UInt32($0)) }))
        let bytes = log.state.snapshot()
        let restored = try ClusterState(snapshot: bytes)
        #expect(restored == log.state)
        #expect(restored.snapshot() == bytes)
    }
}

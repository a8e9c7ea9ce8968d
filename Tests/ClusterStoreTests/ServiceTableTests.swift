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
        #expect(try log.run(ClusterCommands.serviceCreate(Self.service())).changes.map(\.table) == [.services])
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
        #expect(try log.run(ClusterCommands.serviceRemove(id: "svc-hello")).changes.map(\.kind) == [.delete])
        #expect(try log.run(ClusterCommands.serviceRemove(id: "svc-hello")).result == .notFound)
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
        #expect(try log.run(ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [running])).changes.map(\.table) == [.tasks])
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

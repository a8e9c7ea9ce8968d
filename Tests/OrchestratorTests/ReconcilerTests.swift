import ClusterModel
import ClusterStore
import Messages
import Orchestrator
import Testing

/// A store driven the way the leader drives it: orchestrator plans go in as TasksWrite, agents' reports as
/// TaskStatusReport, operators' changes as the commands the admin API proposes.
struct SimulatedCluster {
    var state = ClusterState()
    var reconciler: Reconciler
    var now: UInt64 = 10_000
    /// When set, every applied command's changes go through the dispatcher's index, and each node's deltas
    /// are folded into `agentViews`: what each agent believes it is assigned.
    var dispatcher: AssignmentIndex?
    var agentViews: [NodeID: [String: Flotilla_V1_TaskAssignment]] = [:]
    /// When set, every applied command's changes are noted in the leader's backend tables.
    var backendTables: BackendTables?

    init(seed: UInt64) { reconciler = Reconciler(seed: seed) }

    mutating func run(_ command: [UInt8]) {
        let outcome = try! state.apply(index: state.appliedIndex + 1, command: command)
        if case .invalid(let why) = outcome.result { Issue.record("refused: \(why)") }
        backendTables?.note(outcome.changes, in: state)
        guard dispatcher != nil else { return }
        for (node, delta) in dispatcher!.apply(outcome.changes, state: state) {
            for id in delta.removed { agentViews[node]?[id] = nil }
            for assignment in delta.upserts { agentViews[node, default: [:]][assignment.taskID] = assignment }
        }
    }

    mutating func addNode(_ id: String, labels: [String: String] = [:]) {
        if state.token("tokaaaaa") == nil {
            run(ClusterCommands.tokenCreate(JoinTokenRecord(
                id: "tokaaaaa", role: .agent, secretSHA256: [UInt8](repeating: 1, count: 32), createdAtMs: 0, expiresAtMs: .max)))
        }
        let node = NodeRecord(id: NodeID(id), name: id, labels: labels, address: "10.0.0.1", status: .ready, joinedAtMs: now)
        run(ClusterCommands.nodeJoin(tokenID: "tokaaaaa", nowMs: now, nodeID: NodeID(id), role: .agent, node: node))
    }

    mutating func setNode(_ id: String, status: NodeRecord.Status? = nil, availability: NodeRecord.Availability? = nil) {
        var node = state.node(NodeID(id))!
        if let status { node.status = status }
        if let availability { node.availability = availability }
        run(ClusterCommands.nodeUpsert(node))
    }

    mutating func createService(_ name: String, replicas: UInt32 = 0, global: Bool = false, restart: String = "any", constraints: [String] = []) {
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = name
        spec.driver = "process"
        spec.command = "serve"
        spec.replicas = replicas
        spec.mode = global ? .global : .replicated
        spec.restartPolicy.condition = restart
        spec.constraints = constraints
        var service = Flotilla_V1_ServiceRecord()
        service.id = "svc-\(name)"
        service.spec = ServiceSpecRules.normalized(spec)
        service.version = 1
        run(ClusterCommands.serviceCreate(service))
    }

    mutating func scale(_ name: String, to replicas: UInt32) {
        let service = state.service(named: name)!
        var spec = service.spec
        spec.replicas = replicas
        run(ClusterCommands.serviceUpdate(id: service.id, spec: spec, expectedVersion: service.version, nowMs: now))
    }

    /// Agents start what is assigned to them (on ready nodes) and report it running (or failed, for tasks
    /// `failing` picks).
    mutating func agentsReport(failing: ((Flotilla_V1_TaskRecord) -> Bool)? = nil) {
        let byNode = Dictionary(grouping: state.tasks.filter { !$0.nodeID.isEmpty }, by: \.nodeID)
        for (node, tasks) in byNode.sorted(by: { $0.key < $1.key }) where state.node(NodeID(node))?.status == .ready {
            let statuses = tasks.compactMap { task -> Flotilla_V1_TaskStatus? in
                var status = Flotilla_V1_TaskStatus()
                status.taskID = task.id
                status.atMs = now
                switch (task.desiredState, task.state) {
                case (.running, .assigned), (.running, .starting): status.state = failing?(task) == true ? .failed : .running
                case (.shutdown, .running), (.shutdown, .assigned), (.shutdown, .starting): status.state = .shutdown
                default: return nil
                }
                return status
            }
            if !statuses.isEmpty { run(ClusterCommands.taskStatusReport(nodeID: NodeID(node), statuses)) }
        }
    }

    /// One round of the leader's loop: plan, commit the plan, commit status changes and rollbacks.
    mutating func reconcileOnce() -> TaskPlan {
        let plan = reconciler.plan(for: state, nowMs: now)
        if !plan.writes.isEmpty || !plan.deletes.isEmpty { run(ClusterCommands.tasksWrite(plan.writes, deleting: plan.deletes)) }
        for change in plan.statusUpdates {
            run(ClusterCommands.serviceStatusUpdate(id: change.serviceID, version: change.version, status: change.status))
        }
        for id in plan.rollbacks {
            let service = state.service(id)!
            run(ClusterCommands.serviceUpdate(id: id, spec: service.previousSpec, expectedVersion: service.version, nowMs: now, rollback: true))
        }
        return plan
    }

    /// Plans and reports until nothing changes (at most `rounds`); returns how many rounds it took.
    @discardableResult
    mutating func converge(rounds: Int = 20, step: UInt64 = 100, failing: ((Flotilla_V1_TaskRecord) -> Bool)? = nil) -> Int {
        for round in 1...rounds {
            now += step
            let plan = reconcileOnce()
            agentsReport(failing: failing)
            // An update in progress waits for time to pass (its monitor period), not for a plan; so does a
            // stopped task the restart policy replaces after a delay.
            let updating = state.services.contains { ["updating", "rolling-back"].contains($0.updateStatus.state) }
            let awaitingReplacement = state.tasks.contains { task in
                task.desiredState == .running && [.failed, .complete].contains(task.state)
                    && state.service(task.serviceID).map { $0.spec.restartPolicy.condition != "none" } == true
                    && !task.message.contains("restart limit reached")
            }
            if plan.isEmpty && !updating && !awaitingReplacement { return round }
        }
        return rounds + 1
    }

    /// Changes what the service's tasks run (a new command): a rolling update.
    mutating func update(_ name: String, command: String, configure: (inout Flotilla_V1_UpdateConfig) -> Void = { _ in }) {
        let service = state.service(named: name)!
        var spec = service.spec
        spec.command = command
        configure(&spec.updateConfig)
        spec = ServiceSpecRules.normalized(spec)
        run(ClusterCommands.serviceUpdate(id: service.id, spec: spec, expectedVersion: service.version, nowMs: now))
    }

    /// One random event among the first `kinds`: a node down or back, a node's availability, scaling s0, one
    /// of s0's tasks failing, nothing, a new version of s0, the global service g removed or created again.
    mutating func randomEvent(_ rng: inout SplitMix64, nodeCount: Int, kinds: UInt64) {
        let node = "n\(rng.next() % UInt64(nodeCount))"
        switch rng.next() % kinds {
        case 0: setNode(node, status: .down)
        case 1: setNode(node, status: .ready)
        case 2: setNode(node, availability: [.active, .pause, .drain][Int(rng.next() % 3)])
        case 3: scale("s0", to: UInt32(rng.next() % 10))
        case 4:
            if let task = live("s0").first(where: { !$0.nodeID.isEmpty }) { run(failTask(task)) }
        case 6: update("s0", command: "serve --v\(rng.next() % 1000)")
        case 7:
            if state.service(named: "g") != nil {
                run(ClusterCommands.serviceRemove(id: "svc-g"))
            } else {
                createService("g", global: true)
            }
        default: break
        }
    }

    func live(_ name: String) -> [Flotilla_V1_TaskRecord] {
        guard let service = state.service(named: name) else { return [] }
        return state.tasks(ofService: service.id).filter { $0.desiredState == .running }
    }

    /// The task's agent reports it (restarted in place `restarts` times).
    mutating func report(_ task: Flotilla_V1_TaskRecord, _ state: Flotilla_V1_TaskState, restarts: UInt32, _ message: String) {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = task.id
        status.state = state
        status.restarts = restarts
        status.message = message
        status.atMs = now
        run(ClusterCommands.taskStatusReport(nodeID: NodeID(task.nodeID), [status]))
    }

    func failTask(_ task: Flotilla_V1_TaskRecord) -> [UInt8] {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = task.id
        status.state = .failed
        status.exitCode = 1
        status.atMs = now
        return ClusterCommands.taskStatusReport(nodeID: NodeID(task.nodeID), [status])
    }
}

@Suite("Orchestrator: reconciling services into tasks")
struct ReconcilerTests {
    @Test("a replicated service gets one running task per slot, spread over the nodes")
    func replicated() {
        var cluster = SimulatedCluster(seed: 1)
        for id in ["n1", "n2", "n3"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 6)
        #expect(cluster.converge() < 5)
        let live = cluster.live("web")
        #expect(live.map(\.slot).sorted() == [1, 2, 3, 4, 5, 6])
        #expect(live.allSatisfy { $0.state == .running })
        #expect(Dictionary(grouping: live, by: \.nodeID).mapValues(\.count) == ["n1": 2, "n2": 2, "n3": 2])
    }

    @Test("a node that goes down has its tasks orphaned and replaced elsewhere; they never move")
    func nodeDown() {
        var cluster = SimulatedCluster(seed: 2)
        for id in ["n1", "n2", "n3"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 3)
        cluster.converge()
        let onN1 = cluster.live("web").filter { $0.nodeID == "n1" }
        cluster.setNode("n1", status: .down)
        cluster.converge()
        let live = cluster.live("web")
        #expect(live.count == 3)
        #expect(live.allSatisfy { $0.nodeID != "n1" && $0.state == .running })
        for old in onN1 {
            let now = cluster.state.task(old.id)
            #expect(now?.state == .orphaned)
            #expect(now?.nodeID == "n1", "a task never moves")
            #expect(now?.desiredState == .shutdown)
        }
    }

    @Test("when every node is down at once (the leader is the one cut off) tasks stay; once one is back the others' are replaced")
    func everyNodeDown() {
        var cluster = SimulatedCluster(seed: 4)
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 4)
        cluster.converge()
        let before = cluster.live("web").map(\.id).sorted()
        cluster.setNode("n1", status: .down)
        cluster.setNode("n2", status: .down)
        cluster.converge()
        #expect(cluster.live("web").map(\.id).sorted() == before, "nothing orphaned: the balancers keep their backends")
        #expect(cluster.live("web").allSatisfy { $0.state == .running })
        cluster.setNode("n2", status: .ready)
        cluster.converge()
        let live = cluster.live("web")
        #expect(live.count == 4)
        #expect(live.allSatisfy { $0.nodeID == "n2" }, "n1's tasks are replaced on n2 once n2 is back")
    }

    @Test("in a disruption (most nodes silent at once) a node marked down keeps its tasks")
    func disruptedKeepsTasks() {
        var cluster = SimulatedCluster(seed: 5)
        for id in ["n1", "n2", "n3"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 3)
        cluster.converge()
        let before = cluster.live("web").map(\.id).sorted()
        cluster.setNode("n1", status: .down)
        cluster.now += 100
        let plan = cluster.reconciler.plan(for: cluster.state, nowMs: cluster.now, disrupted: true)
        #expect(plan.writes.isEmpty, "nothing orphaned or placed: \(plan.writes.map(\.id))")
        let ordinary = cluster.reconciler.plan(for: cluster.state, nowMs: cluster.now, disrupted: false)
        #expect(ordinary.writes.contains { before.contains($0.id) && $0.state == .orphaned }, "without the disruption n1's task is orphaned")
    }

    @Test("drain moves tasks away; pause keeps them but takes no new ones; activate takes tasks again")
    func drainAndPause() {
        var cluster = SimulatedCluster(seed: 3)
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 4)
        cluster.converge()
        cluster.setNode("n1", availability: .drain)
        cluster.converge()
        #expect(cluster.live("web").allSatisfy { $0.nodeID == "n2" })
        #expect(cluster.live("web").count == 4)
        cluster.setNode("n1", availability: .pause)
        cluster.scale("web", to: 6)
        cluster.converge()
        #expect(cluster.live("web").filter { $0.nodeID == "n1" }.isEmpty)
        cluster.setNode("n1", availability: .active)
        cluster.scale("web", to: 8)
        cluster.converge()
        #expect(!cluster.live("web").filter { $0.nodeID == "n1" }.isEmpty)
    }

    @Test("scaling down stops the highest slots; scaling up fills the gaps")
    func scaling() {
        var cluster = SimulatedCluster(seed: 4)
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 5)
        cluster.converge()
        cluster.scale("web", to: 2)
        cluster.converge()
        #expect(cluster.live("web").map(\.slot).sorted() == [1, 2])
        cluster.scale("web", to: 0)
        cluster.converge()
        #expect(cluster.live("web").isEmpty)
        cluster.scale("web", to: 3)
        cluster.converge(rounds: 100)
        #expect(cluster.live("web").map(\.slot).sorted() == [1, 2, 3])
    }

    @Test("a global service runs one task on every eligible node, following nodes as they come and go")
    func global() {
        var cluster = SimulatedCluster(seed: 5)
        cluster.addNode("n1", labels: ["disk": "ssd"])
        cluster.addNode("n2", labels: ["disk": "hdd"])
        cluster.addNode("n3", labels: ["disk": "ssd"])
        cluster.createService("agent", global: true, constraints: ["node.labels.disk==ssd"])
        cluster.converge()
        #expect(Set(cluster.live("agent").map(\.nodeID)) == ["n1", "n3"])
        cluster.addNode("n4", labels: ["disk": "ssd"])
        cluster.setNode("n1", availability: .drain)
        cluster.converge()
        #expect(Set(cluster.live("agent").map(\.nodeID)) == ["n3", "n4"])
        #expect(cluster.live("agent").allSatisfy { $0.slot == 0 })
    }

    @Test("failed tasks are replaced as the restart policy says")
    func restartPolicy() {
        for (condition, replaced) in [("any", true), ("on-failure", true), ("none", false)] {
            var cluster = SimulatedCluster(seed: 6)
            cluster.addNode("n1")
            cluster.createService("job", replicas: 1, restart: condition)
            cluster.converge()
            let first = cluster.live("job")[0]
            cluster.run(cluster.failTask(first))
            cluster.converge()
            let running = cluster.live("job").filter { $0.state == .running }
            #expect(running.count == (replaced ? 1 : 0), "restart \(condition)")
            // Replaced: the failed task is shut down. Not replaced: it keeps its slot, finished.
            #expect(cluster.state.task(first.id)?.desiredState == (replaced ? .shutdown : .running))
            #expect(cluster.state.task(first.id)?.state == .failed)
        }
    }

    @Test("max_attempts within the window counts restarts in place and replacements; once reached the slot stays failed, saying why")
    func restartLimit() {
        var cluster = SimulatedCluster(seed: 7)
        cluster.addNode("n1")
        cluster.addNode("n2")
        cluster.createService("job", replicas: 1)
        var service = cluster.state.service(named: "job")!
        var spec = service.spec
        spec.restartPolicy.maxAttempts = 4
        spec.restartPolicy.windowMs = 60_000
        cluster.run(ClusterCommands.serviceUpdate(id: service.id, spec: spec, expectedVersion: service.version, nowMs: cluster.now))
        cluster.converge()
        // Each task is restarted twice in place by its agent, then given back as failed.
        var failures = 0
        while let task = cluster.live("job").first(where: { $0.state == .running }), failures < 10 {
            cluster.report(task, .failed, restarts: 2, "exited with status 1; failed 3 times in a row on this node")
            failures += 1
            cluster.converge()
        }
        // 2 restarts in place, a replacement, 2 more in place: the limit of 4 is reached with the second task.
        #expect(failures == 2)
        service = cluster.state.service(named: "job")!
        let last = cluster.live("job")
        #expect(last.count == 1)
        #expect(last.first?.state == .failed)
        #expect(last.first?.message.hasSuffix("restart limit reached (4 restarts within 60 s)") == true, "\(last.first?.message ?? "")")
        // Outside the window, a failure is replaced again.
        cluster.now += 120_000
        cluster.converge()
        #expect(cluster.live("job").filter { $0.state == .running }.count == 1)
    }

    @Test("a new task its agent restarts in place counts as failed for the rolling update's judgement")
    func restartedUpdateTaskCountsAsFailed() {
        var cluster = SimulatedCluster(seed: 14)
        cluster.addNode("n1")
        cluster.createService("web", replicas: 2)
        cluster.converge()
        cluster.update("web", command: "crash-loop") { $0.failureAction = "pause"; $0.monitorMs = 60_000 }
        // The agents report the new tasks running, then restarting in place (state starting, one restart).
        cluster.converge(rounds: 3)
        let fresh = cluster.live("web").filter { $0.specDigest == ServiceSpecRules.taskDigest(cluster.state.service(named: "web")!.spec) }
        #expect(!fresh.isEmpty)
        for task in fresh {
            cluster.report(task, .starting, restarts: 1, "exited with status 1; restarting in 1s (restart 1)")
        }
        _ = cluster.reconcileOnce()
        let update = cluster.state.service(named: "web")!.updateStatus
        #expect(update.state == "paused")
        #expect(update.message.contains("updated tasks failed"))
    }

    @Test("a task that cannot be placed stays pending with the reason, and is placed once a node can take it")
    func pending() {
        var cluster = SimulatedCluster(seed: 7)
        cluster.addNode("n1", labels: ["zone": "a"])
        cluster.createService("web", replicas: 1, constraints: ["node.labels.zone==b"])
        cluster.converge()
        let pending = cluster.live("web")
        #expect(pending.count == 1 && pending[0].state == .pending)
        #expect(pending[0].message == "1 node does not meet node.labels.zone==b")
        cluster.addNode("n2", labels: ["zone": "b"])
        cluster.converge()
        #expect(cluster.live("web").map(\.nodeID) == ["n2"])
        #expect(cluster.live("web")[0].id == pending[0].id, "the pending task itself is placed")
    }

    @Test("a removed service's tasks are shut down and, once finished, forgotten")
    func removedService() {
        var cluster = SimulatedCluster(seed: 8)
        cluster.addNode("n1")
        cluster.createService("web", replicas: 2)
        cluster.converge()
        cluster.run(ClusterCommands.serviceRemove(id: "svc-web"))
        cluster.converge()
        #expect(cluster.state.tasks.isEmpty)
    }

    @Test("random clusters under random events converge: every slot filled once, on ready, non-draining nodes, never over capacity", arguments: 0..<100 as Range<UInt64>)
    func randomConvergence(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var cluster = SimulatedCluster(seed: seed)
        let nodeCount = 2 + Int(rng.next() % 6)
        for index in 0..<nodeCount { cluster.addNode("n\(index)", labels: ["zone": index % 2 == 0 ? "a" : "b"]) }
        for service in 0..<(1 + Int(rng.next() % 3)) { cluster.createService("s\(service)", replicas: UInt32(rng.next() % 8)) }
        cluster.createService("g", global: true)
        for _ in 0..<15 {
            cluster.randomEvent(&rng, nodeCount: nodeCount, kinds: 6)
            // Half-second steps: a scale is a new version whose (default 5 s) monitor period must pass.
            let rounds = cluster.converge(rounds: 60, step: 500)
            #expect(rounds <= 60, "seed \(seed): did not converge")
            check(cluster, seed: seed)
        }
    }

    func check(_ cluster: SimulatedCluster, seed: UInt64) {
        // With every node down, tasks stay where they are (the full-disruption rule): a down node is usable then.
        let everyNodeDown = !cluster.state.nodes.isEmpty && cluster.state.nodes.allSatisfy { $0.status == .down }
        let usable = Set(cluster.state.nodes.filter { ($0.status == .ready || everyNodeDown) && $0.availability != .drain }.map(\.id.rawValue))
        let placeable = cluster.state.nodes.filter { $0.status == .ready && $0.availability == .active }
        for service in cluster.state.services {
            let live = cluster.live(service.spec.name)
            for task in live where !task.nodeID.isEmpty {
                #expect(usable.contains(task.nodeID), "seed \(seed): \(service.spec.name) task on unusable node \(task.nodeID)")
            }
            if service.spec.mode == .global {
                let nodesWithTask = Set(live.map(\.nodeID))
                #expect(Set(placeable.map(\.id.rawValue)).isSubset(of: nodesWithTask), "seed \(seed): global service missing on a node")
                #expect(nodesWithTask.count == live.count, "seed \(seed): two global tasks on one node")
            } else {
                #expect(live.map(\.slot).sorted() == Array(1...max(1, service.spec.replicas)).prefix(Int(service.spec.replicas)).map { $0 },
                        "seed \(seed): \(service.spec.name) slots \(live.map(\.slot).sorted()) for \(service.spec.replicas) replicas")
                if !placeable.isEmpty {
                    #expect(live.allSatisfy { !$0.nodeID.isEmpty }, "seed \(seed): a task left pending while nodes can take it")
                }
            }
        }
    }

    // MARK: - Rolling updates

    static func running(_ cluster: SimulatedCluster, _ name: String) -> [Flotilla_V1_TaskRecord] {
        cluster.live(name).filter { $0.state == .running }
    }

    @Test("a stop-first update replaces tasks one at a time, never more than the parallelism out at once")
    func stopFirstUpdate() {
        var cluster = SimulatedCluster(seed: 11)
        for id in ["n1", "n2", "n3"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 6)
        cluster.converge()
        cluster.update("web", command: "serve --v2") { $0.parallelism = 2; $0.monitorMs = 300 }
        let digest = ServiceSpecRules.taskDigest(cluster.state.service(named: "web")!.spec)
        var rounds = 0
        while rounds < 200, cluster.state.service(named: "web")!.updateStatus.state != "completed" {
            rounds += 1
            cluster.now += 100
            _ = cluster.reconcileOnce()
            // Between a plan and the agents' reports, at most `parallelism` slots lack a running task.
            #expect(6 - Self.running(cluster, "web").count <= 2, "round \(rounds): \(Self.running(cluster, "web").count) running")
            cluster.agentsReport()
        }
        #expect(cluster.state.service(named: "web")!.updateStatus.state == "completed")
        #expect(cluster.live("web").count == 6)
        #expect(cluster.live("web").allSatisfy { $0.specDigest == digest && $0.state == .running })
    }

    @Test("random rolling updates: never more slots out than the parallelism (stop-first) or any (start-first), and every task updated", arguments: 0..<60 as Range<UInt64>)
    func randomUpdates(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var cluster = SimulatedCluster(seed: seed)
        let nodes = 1 + Int(rng.next() % 6)
        for index in 0..<nodes { cluster.addNode("n\(index)") }
        let replicas = 1 + Int(rng.next() % 12)
        cluster.createService("web", replicas: UInt32(replicas))
        cluster.converge()
        let parallelism = Int(rng.next() % 5)  // 0: all at once
        let startFirst = rng.next() % 2 == 0
        let delay = UInt32(rng.next() % 2) * 300
        cluster.update("web", command: "serve --v2") {
            $0.parallelism = UInt32(parallelism)
            $0.order = startFirst ? "start-first" : "stop-first"
            $0.delayMs = delay
            $0.monitorMs = 200
        }
        let digest = ServiceSpecRules.taskDigest(cluster.state.service(named: "web")!.spec)
        let allowedOut = startFirst ? 0 : (parallelism == 0 ? replicas : parallelism)
        var rounds = 0
        while rounds < 400, cluster.state.service(named: "web")!.updateStatus.state != "completed" {
            rounds += 1
            cluster.now += 100
            _ = cluster.reconcileOnce()
            let slotsRunning = Set(Self.running(cluster, "web").map(\.slot)).count
            #expect(replicas - slotsRunning <= allowedOut,
                    "seed \(seed): \(replicas - slotsRunning) slots out (parallelism \(parallelism), \(startFirst ? "start" : "stop")-first)")
            cluster.agentsReport()
        }
        #expect(cluster.state.service(named: "web")!.updateStatus.state == "completed", "seed \(seed): update did not complete")
        let live = cluster.live("web")
        #expect(live.count == replicas && live.allSatisfy { $0.specDigest == digest && $0.state == .running }, "seed \(seed)")
    }

    @Test("a start-first update starts each new task before stopping the old one: never fewer than the replicas running")
    func startFirstUpdate() {
        var cluster = SimulatedCluster(seed: 12)
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 4)
        cluster.converge()
        cluster.update("web", command: "serve --v2") { $0.order = "start-first"; $0.monitorMs = 200 }
        var rounds = 0
        while rounds < 200, cluster.state.service(named: "web")!.updateStatus.state != "completed" {
            rounds += 1
            cluster.now += 100
            _ = cluster.reconcileOnce()
            #expect(Self.running(cluster, "web").count >= 4, "round \(rounds)")
            cluster.agentsReport()
        }
        #expect(cluster.state.service(named: "web")!.updateStatus.state == "completed")
        #expect(cluster.live("web").count == 4)
    }

    @Test("a new version whose tasks fail is rolled back automatically when the failure action says so")
    func automaticRollback() {
        var cluster = SimulatedCluster(seed: 13)
        for id in ["n1", "n2"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 4)
        cluster.converge()
        let good = ServiceSpecRules.taskDigest(cluster.state.service(named: "web")!.spec)
        cluster.update("web", command: "crash") { $0.failureAction = "rollback"; $0.monitorMs = 200 }
        let bad = ServiceSpecRules.taskDigest(cluster.state.service(named: "web")!.spec)
        cluster.converge(rounds: 300) { $0.specDigest == bad }
        let service = cluster.state.service(named: "web")!
        #expect(service.updateStatus.state == "rolled-back")
        #expect(service.spec.command == "serve")
        #expect(cluster.live("web").count == 4)
        #expect(cluster.live("web").allSatisfy { $0.specDigest == good && $0.state == .running })
    }

    @Test("with failure action pause, a failing update stops where it is and says why")
    func pausedUpdate() {
        var cluster = SimulatedCluster(seed: 14)
        cluster.addNode("n1")
        cluster.createService("web", replicas: 4)
        cluster.converge()
        cluster.update("web", command: "crash") { $0.monitorMs = 200 }
        let bad = ServiceSpecRules.taskDigest(cluster.state.service(named: "web")!.spec)
        cluster.converge(rounds: 50) { $0.specDigest == bad }
        let status = cluster.state.service(named: "web")!.updateStatus
        #expect(status.state == "paused")
        #expect(status.message.contains("updated tasks failed"))
        #expect(cluster.live("web").filter { $0.specDigest != bad }.count >= 2, "the update stopped early")
    }

    @Test("a leader change in the middle of an update continues it from the store")
    func failoverDuringUpdate() {
        var cluster = SimulatedCluster(seed: 15)
        for id in ["n1", "n2", "n3"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 6)
        cluster.converge()
        cluster.update("web", command: "serve --v2") { $0.monitorMs = 300 }
        for _ in 0..<4 {
            cluster.now += 100
            _ = cluster.reconcileOnce()
            cluster.agentsReport()
        }
        #expect(cluster.state.service(named: "web")!.updateStatus.state == "updating")
        // A new leader: a fresh reconciler with its own randomness, the same store.
        cluster.reconciler = Reconciler(seed: 999)
        cluster.converge(rounds: 300)
        #expect(cluster.state.service(named: "web")!.updateStatus.state == "completed")
        #expect(cluster.live("web").count == 6)
        #expect(Set(cluster.live("web").map(\.specDigest)).count == 1)
    }

    @Test("scaling changes nothing a task runs, so it restarts no task")
    func scalingRestartsNothing() {
        var cluster = SimulatedCluster(seed: 16)
        cluster.addNode("n1")
        cluster.createService("web", replicas: 2)
        cluster.converge()
        let before = Set(cluster.live("web").map(\.id))
        cluster.scale("web", to: 3)
        cluster.converge(rounds: 100)
        #expect(before.isSubset(of: Set(cluster.live("web").map(\.id))))
        #expect(cluster.live("web").count == 3)
        #expect(cluster.state.service(named: "web")!.updateStatus.state == "completed")
    }
}

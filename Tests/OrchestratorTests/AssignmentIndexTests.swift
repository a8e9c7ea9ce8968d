import ClusterModel
import ClusterStore
import Messages
import Orchestrator
import Testing

/// The dispatcher's index: the changes it sends each agent, applied in order, always add up to the complete
/// set the agent would get from scratch.
@Suite("Orchestrator: assignment index (incremental dispatch)")
struct AssignmentIndexTests {
    /// The complete set, by definition: every task placed on the node that should run, or should stop and may
    /// still run.
    static func expected(_ state: ClusterState, node: NodeID) -> [String: Flotilla_V1_TaskAssignment] {
        var index = AssignmentIndex()
        index.rebuild(from: state)
        return Dictionary(uniqueKeysWithValues: index.complete(for: node, in: state).map { ($0.taskID, $0) })
    }

    static func checkViews(_ cluster: SimulatedCluster, _ context: String) {
        for node in cluster.state.nodes.map(\.id) {
            let view = cluster.agentViews[node] ?? [:]
            let truth = expected(cluster.state, node: node)
            #expect(Set(view.keys) == Set(truth.keys), "\(context): \(node) believes \(view.keys.sorted()), should be \(truth.keys.sorted())")
            for (id, assignment) in truth where view[id] != nil {
                #expect(view[id]!.desiredState == assignment.desiredState, "\(context): \(node) has a stale desired state for \(id)")
                #expect(view[id]!.spec == assignment.spec, "\(context): \(node) has a stale spec for \(id)")
            }
        }
    }

    @Test("the complete set lists the tasks to run and the ones to stop that may still run, nothing else")
    func completeSet() {
        var cluster = SimulatedCluster(seed: 1)
        cluster.addNode("n1")
        cluster.createService("web", replicas: 3)
        cluster.converge()
        var index = AssignmentIndex()
        index.rebuild(from: cluster.state)
        #expect(index.complete(for: NodeID("n1"), in: cluster.state).count == 3)
        // Each names its node, for the task's FLOTILLA_NODE_ID and FLOTILLA_NODE.
        #expect(index.complete(for: NodeID("n1"), in: cluster.state).allSatisfy { $0.nodeID == "n1" && $0.nodeName == "n1" })
        cluster.scale("web", to: 1)
        _ = cluster.reconcileOnce()  // two tasks now desired shutdown, still running
        index.rebuild(from: cluster.state)
        let set = index.complete(for: NodeID("n1"), in: cluster.state)
        #expect(set.count == 3)
        #expect(set.filter { $0.desiredState == .shutdown }.count == 2)
        cluster.agentsReport()  // the agent stopped them: nothing left to tell it about those two
        index.rebuild(from: cluster.state)
        #expect(index.complete(for: NodeID("n1"), in: cluster.state).map(\.desiredState) == [.running])
    }

    @Test("a status report that changes nothing the agent must do sends it nothing")
    func echoSuppressed() {
        var cluster = SimulatedCluster(seed: 2)
        cluster.dispatcher = AssignmentIndex()
        cluster.addNode("n1")
        cluster.createService("web", replicas: 2)
        _ = cluster.reconcileOnce()
        var index = cluster.dispatcher!
        let tasks = cluster.state.tasks
        var status = Flotilla_V1_TaskStatus()
        status.taskID = tasks[0].id
        status.state = .running
        let outcome = try! cluster.state.apply(
            index: cluster.state.appliedIndex + 1, command: ClusterCommands.taskStatusReport(nodeID: NodeID("n1"), [status]))
        #expect(!outcome.changes.isEmpty)
        #expect(index.apply(outcome.changes, state: cluster.state).isEmpty)
    }

    @Test("removing a service tells each agent to stop its tasks, and to forget them once they stopped")
    func serviceRemoval() {
        var cluster = SimulatedCluster(seed: 3)
        cluster.dispatcher = AssignmentIndex()
        cluster.addNode("n1")
        cluster.addNode("n2")
        cluster.createService("web", replicas: 4)
        cluster.converge()
        Self.checkViews(cluster, "after create")
        #expect(cluster.agentViews.values.map(\.count).reduce(0, +) == 4)
        cluster.run(ClusterCommands.serviceRemove(id: "svc-web"))
        Self.checkViews(cluster, "after remove")
        #expect(cluster.agentViews.values.flatMap(\.values).allSatisfy { $0.desiredState == .shutdown })
        cluster.converge()
        Self.checkViews(cluster, "after the tasks stopped")
        #expect(cluster.agentViews.values.allSatisfy { $0.isEmpty })
    }

    @Test("random clusters under random events: every agent's view, built from changes alone, equals its complete set", arguments: 0..<60 as Range<UInt64>)
    func deltasAddUp(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var cluster = SimulatedCluster(seed: seed)
        cluster.dispatcher = AssignmentIndex()
        let nodeCount = 2 + Int(rng.next() % 5)
        for index in 0..<nodeCount { cluster.addNode("n\(index)") }
        cluster.createService("s0", replicas: UInt32(1 + rng.next() % 6))
        cluster.createService("g", global: true)
        for step in 0..<12 {
            cluster.randomEvent(&rng, nodeCount: nodeCount, kinds: 8)
            Self.checkViews(cluster, "seed \(seed) step \(step) (event)")
            // Check between every round, not only at the end: agents act on each update as it comes.
            for _ in 0..<30 {
                cluster.now += 500
                let plan = cluster.reconcileOnce()
                Self.checkViews(cluster, "seed \(seed) step \(step) (plan)")
                cluster.agentsReport()
                Self.checkViews(cluster, "seed \(seed) step \(step) (reports)")
                if plan.isEmpty { break }
            }
        }
    }
}

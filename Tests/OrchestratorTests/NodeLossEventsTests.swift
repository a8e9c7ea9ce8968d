import ClusterModel
import ClusterStore
import Messages
import Testing

/// What `flotilla events -f` shows of a node loss, with the orchestrator's real plans: the node down, its tasks
/// orphaned, their replacements assigned elsewhere (saying where they came from) and started.
@Suite("Events of a node loss")
struct NodeLossEventsTests {
    @Test("a node that goes down shows node.down, task.stopped for each of its tasks, then task.assigned and task.started for each replacement")
    func nodeLoss() throws {
        var cluster = SimulatedCluster(seed: 2)
        for id in ["n1", "n2", "n3"] { cluster.addNode(id) }
        cluster.createService("web", replicas: 3)
        cluster.converge()
        let lost = cluster.live("web").filter { $0.nodeID == "n1" }.map(\.id)
        try #require(!lost.isEmpty, "the scheduler spreads three replicas over three nodes")
        let start = cluster.state.lastEventID
        cluster.setNode("n1", status: .down)
        cluster.converge()
        let events = Array(cluster.state.events(after: start))

        #expect(events.first?.type == "node.down" && events.first?.nodeName == "n1")
        let stopped = events.filter { $0.type == "task.stopped" }
        #expect(Set(stopped.map(\.taskID)) == Set(lost))
        #expect(stopped.allSatisfy { $0.message == "orphaned: node n1 is down" && $0.nodeID == "n1" && $0.serviceName == "web" })
        let replacements = cluster.live("web").filter { !lost.contains($0.id) && $0.createdAtMs > 0 }.filter { task in
            events.contains { $0.type == "task.assigned" && $0.taskID == task.id }
        }
        #expect(replacements.count == lost.count)
        for task in replacements {
            let assigned = try #require(events.first { $0.type == "task.assigned" && $0.taskID == task.id })
            #expect(assigned.message == "slot \(task.slot) on \(task.nodeID), rescheduled from n1 (down)")
            let started = try #require(events.first { $0.type == "task.started" && $0.taskID == task.id })
            #expect(started.nodeName == task.nodeID && started.nodeName != "n1")
            #expect(started.id > assigned.id && assigned.id > stopped.map(\.id).min()!)
        }
        // Nothing else happened to the tasks that stayed.
        #expect(!events.contains { $0.type.hasPrefix("task.") && !lost.contains($0.taskID) && !replacements.map(\.id).contains($0.taskID) })
    }
}

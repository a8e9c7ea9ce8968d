import ClusterModel
import ClusterStore
@testable import Scheduler
import Testing

@Suite("Scheduler: placement properties over seeded random clusters")
struct SchedulerTests {
    /// A random cluster: some nodes not ready, paused or draining, zones, capacities, existing load.
    static func cluster(_ rng: inout SplitMix64, size: Int) -> [SchedulingNode] {
        (0..<size).map { index in
            var node = SchedulingNode(
                id: NodeID("n" + String(1000 + index).dropFirst()), name: "node-\(index)",
                labels: ["zone": ["a", "b", "c"][Int(rng.next() % 3)], "disk": rng.next() % 2 == 0 ? "ssd" : "hdd"],
                isReady: rng.next() % 10 != 0,
                availability: [.active, .active, .active, .active, .pause, .drain][Int(rng.next() % 6)],
                cpuCapacityMillis: 1_000 * (1 + rng.next() % 8), memoryCapacityBytes: (1 + rng.next() % 16) << 30)
            node.reservedMemoryBytes = (rng.next() % 4) << 28
            node.reservedCPUMillis = 250 * (rng.next() % 3)
            return node
        }
    }

    static func request(_ rng: inout SplitMix64, id: String) -> PlacementRequest {
        var constraints: [PlacementConstraint] = []
        if rng.next() % 3 == 0 { constraints.append(PlacementConstraint(attribute: .label("disk"), equals: rng.next() % 2 == 0, value: "ssd")) }
        if rng.next() % 4 == 0 { constraints.append(PlacementConstraint(attribute: .name, equals: false, value: "node-1")) }
        return PlacementRequest(
            serviceID: id, cpuMillis: 100 * (rng.next() % 8), memoryBytes: (rng.next() % 8) << 27, constraints: constraints,
            maxPerNode: Int(rng.next() % 4), spreadOverLabel: rng.next() % 3 == 0 ? "zone" : nil,
            strategy: rng.next() % 4 == 0 ? .binpack : .spread,
            hostPorts: rng.next() % 4 == 0 ? [UInt32(8000 + rng.next() % 2)] : [])
    }

    @Test("no node is over-committed, every constraint and limit holds, and unplaced tasks are explained", arguments: 0..<200 as Range<UInt64>)
    func safety(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var nodes = Self.cluster(&rng, size: 2 + Int(rng.next() % 30))
        let before = nodes
        var hostPortHolders: [String: Int] = [:]  // "node/port" -> tasks binding it there
        for service in 0..<3 {
            let request = Self.request(&rng, id: "svc-\(service)")
            let count = Int(rng.next() % 40)
            let placement = Scheduler.place(count, request, on: &nodes)
            #expect(placement.nodes.count + placement.unplaced == count)
            for id in placement.nodes {
                for port in request.hostPorts { hostPortHolders["\(id)/\(port)", default: 0] += 1 }
            }
            for id in placement.nodes {
                let node = nodes.first { $0.id == id }!
                #expect(node.isReady && node.availability == .active, "seed \(seed): placed on \(node.name) (\(node.availability))")
                for constraint in request.constraints {
                    #expect(Scheduler.satisfies(node, constraint), "seed \(seed): \(node.name) breaks a constraint")
                }
            }
            if request.maxPerNode > 0 {
                for node in nodes { #expect(node.tasksByService[request.serviceID, default: 0] <= request.maxPerNode) }
            }
            if placement.unplaced > 0 { #expect(placement.explanation?.isEmpty == false) }
        }
        for (holder, count) in hostPortHolders {
            #expect(count == 1, "seed \(seed): \(count) tasks bind host port \(holder)")
        }
        for (node, original) in zip(nodes, before) {
            // Only what was placed here was added, and never beyond capacity (unless it was already over).
            if original.reservedCPUMillis <= original.cpuCapacityMillis! {
                #expect(node.reservedCPUMillis <= node.cpuCapacityMillis!, "seed \(seed): \(node.name) CPU over-committed")
            }
            if original.reservedMemoryBytes <= original.memoryCapacityBytes! {
                #expect(node.reservedMemoryBytes <= node.memoryCapacityBytes!, "seed \(seed): \(node.name) memory over-committed")
            }
        }
    }

    @Test("spread keeps a service within one task per node of even when nothing else limits it", arguments: 0..<100 as Range<UInt64>)
    func spreadIsBalanced(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let size = 1 + Int(rng.next() % 20)
        var nodes = (0..<size).map { SchedulingNode(id: NodeID("n\($0)"), name: "node-\($0)") }
        // Other services' tasks already there must not unbalance this one.
        for index in nodes.indices { nodes[index].totalTasks = Int(rng.next() % 10) }
        let count = Int(rng.next() % 100)
        _ = Scheduler.place(count, PlacementRequest(serviceID: "web"), on: &nodes)
        let counts = nodes.map { $0.tasksByService["web", default: 0] }
        #expect(counts.reduce(0, +) == count)
        #expect(counts.max()! - counts.min()! <= 1, "seed \(seed): \(counts)")
    }

    @Test("spreading over a zone label balances the zones, then the nodes in each")
    func spreadOverZones() {
        var nodes = [
            SchedulingNode(id: NodeID("a1"), name: "a1", labels: ["zone": "a"]),
            SchedulingNode(id: NodeID("a2"), name: "a2", labels: ["zone": "a"]),
            SchedulingNode(id: NodeID("a3"), name: "a3", labels: ["zone": "a"]),
            SchedulingNode(id: NodeID("b1"), name: "b1", labels: ["zone": "b"]),
        ]
        let placement = Scheduler.place(6, PlacementRequest(serviceID: "web", spreadOverLabel: "zone"), on: &nodes)
        let perZone = Dictionary(grouping: placement.nodes, by: { $0.rawValue.first! }).mapValues(\.count)
        #expect(perZone == ["a": 3, "b": 3])
        #expect(nodes.filter { $0.labels["zone"] == "a" }.map { $0.tasksByService["web"] } == [1, 1, 1])
    }

    @Test("binpack fills the fullest node that still fits before touching an empty one")
    func binpack() {
        var nodes = [
            SchedulingNode(id: NodeID("big"), name: "big", memoryCapacityBytes: 8 << 30),
            SchedulingNode(id: NodeID("half"), name: "half", memoryCapacityBytes: 8 << 30),
        ]
        nodes[1].reservedMemoryBytes = 4 << 30
        let placement = Scheduler.place(5, PlacementRequest(serviceID: "db", memoryBytes: 1 << 30, strategy: .binpack), on: &nodes)
        #expect(placement.nodes.map(\.rawValue) == ["half", "half", "half", "half", "big"])
    }

    @Test("a task that fits nowhere stays pending with the reasons, counted")
    func explanation() {
        var nodes = [
            SchedulingNode(id: NodeID("n1"), name: "n1", memoryCapacityBytes: 1 << 30),
            SchedulingNode(id: NodeID("n2"), name: "n2", memoryCapacityBytes: 1 << 30),
            SchedulingNode(id: NodeID("n3"), name: "n3", memoryCapacityBytes: 1 << 30),
            SchedulingNode(id: NodeID("n4"), name: "n4", availability: .drain),
            SchedulingNode(id: NodeID("n5"), name: "n5", isReady: false),
        ]
        let placement = Scheduler.place(1, PlacementRequest(serviceID: "big", memoryBytes: 2 << 30), on: &nodes)
        #expect(placement.unplaced == 1)
        #expect(placement.explanation == "3 nodes lack memory; 1 node is not ready; 1 node is draining")
        var empty: [SchedulingNode] = []
        #expect(Scheduler.place(1, PlacementRequest(serviceID: "x"), on: &empty).explanation == "no nodes have joined the cluster")
    }

    @Test("tasks publishing a host port never share a node; the rest stay pending, saying why")
    func hostPorts() {
        var nodes = (1...3).map { SchedulingNode(id: NodeID("n\($0)"), name: "n\($0)") }
        let web = PlacementRequest(serviceID: "web", hostPorts: [9000])
        let first = Scheduler.place(4, web, on: &nodes)
        #expect(Set(first.nodes).count == 3)
        #expect(first.unplaced == 1)
        #expect(first.explanation == "3 nodes have host port 9000 in use")
        // Another service on the same host port finds no room either; on another port it fits.
        #expect(Scheduler.place(1, PlacementRequest(serviceID: "other", hostPorts: [9000]), on: &nodes).unplaced == 1)
        #expect(Scheduler.place(1, PlacementRequest(serviceID: "other", hostPorts: [9001]), on: &nodes).unplaced == 0)
        // A stopped task frees its port.
        nodes[0].release(web)
        #expect(Scheduler.place(1, web, on: &nodes).nodes == [NodeID("n1")])
    }

    @Test("a node where the service failed recently is avoided while others can take the task")
    func avoidsRecentFailures() {
        var nodes = [SchedulingNode(id: NodeID("n1"), name: "n1"), SchedulingNode(id: NodeID("n2"), name: "n2")]
        nodes[0].recentFailures["web"] = 2
        #expect(Scheduler.place(1, PlacementRequest(serviceID: "web"), on: &nodes).nodes == [NodeID("n2")])
    }

    @Test("placement is deterministic: the same cluster and request give the same nodes")
    func deterministic() {
        var rng1 = SplitMix64(seed: 77)
        var rng2 = SplitMix64(seed: 77)
        var a = Self.cluster(&rng1, size: 25)
        var b = Self.cluster(&rng2, size: 25)
        let request = Self.request(&rng1, id: "svc")
        _ = Self.request(&rng2, id: "svc")
        #expect(Scheduler.place(30, request, on: &a) == Scheduler.place(30, request, on: &b))
    }

    @Test("the heap placement picks exactly the nodes a scan of every node would", arguments: 0..<200 as Range<UInt64>)
    func heapAgreesWithScan(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let cluster = Self.cluster(&rng, size: 1 + Int(rng.next() % 40))
        let request = Self.request(&rng, id: "svc")
        let count = Int(rng.next() % 60)
        var fast = cluster
        let placement = Scheduler.place(count, request, on: &fast)
        // The reference: one full scan per task.
        var slow = cluster
        var reference: [NodeID] = []
        for _ in 0..<count {
            guard let index = Scheduler.best(for: request, among: slow) else { break }
            slow[index].reserve(request)
            reference.append(slow[index].id)
        }
        #expect(placement.nodes == reference, "seed \(seed)")
        #expect(fast == slow)
    }
}

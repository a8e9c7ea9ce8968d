// scheduler-bench: places tasks with the pure Scheduler and plans with the pure Reconciler on synthetic
// clusters, timing each (monotonic clock), several rounds, median reported.
//
//   scheduler-bench [--nodes 5000] [--tasks 100000] [--services 100] [--rounds 3]
//
// (a) place: `--tasks` tasks of `--services` services (equal shares, 100-500 millicores and 64-512 MiB each, a
//     third with a zone constraint, a third spread over zones) onto `--nodes` nodes (3 zones, 8-64 cores,
//     16-256 GiB) with `Scheduler.place`, one service after the other, as the reconciler does.
// (b) plan: a store holding the same services and nodes and no tasks; one `Reconciler.plan` creates and
//     places every task, as the leader's first round after a restore would.
// Prints one line per measurement and a JSON summary on stdout.
import ClusterModel
import ClusterStore
import Foundation
import Messages
import Orchestrator
import Scheduler

func argument(_ name: String, _ fallback: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: "--\(name)"), index + 1 < arguments.count, let value = Int(arguments[index + 1]) else {
        return fallback
    }
    return value
}

let nodeCount = argument("nodes", 5_000)
let taskCount = argument("tasks", 100_000)
let serviceCount = argument("services", 100)
let rounds = argument("rounds", 3)
let clock = ContinuousClock()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func nodes(_ rng: inout SplitMix64) -> [SchedulingNode] {
    (0..<nodeCount).map { index in
        SchedulingNode(
            id: NodeID("node-\(index)"), name: "node-\(index)", labels: ["zone": "z\(index % 3)"],
            cpuCapacityMillis: 1_000 * (8 + rng.next() % 57), memoryCapacityBytes: (16 + rng.next() % 241) << 30)
    }
}

func requests(_ rng: inout SplitMix64) -> [PlacementRequest] {
    (0..<serviceCount).map { index in
        PlacementRequest(
            serviceID: "svc-\(index)", cpuMillis: 100 + rng.next() % 401, memoryBytes: (64 + rng.next() % 449) << 20,
            constraints: index % 3 == 0 ? [PlacementConstraint(attribute: .label("zone"), equals: true, value: "z\(index % 3)")] : [],
            spreadOverLabel: index % 3 == 1 ? "zone" : nil)
    }
}

var placeTimes: [Double] = []
var placed = 0
for round in 1...rounds {
    var rng = SplitMix64(seed: UInt64(round))
    var cluster = nodes(&rng)
    let asks = requests(&rng)
    let perService = taskCount / serviceCount
    let start = clock.now
    placed = 0
    for request in asks {
        placed += Scheduler.place(perService, request, on: &cluster).nodes.count
    }
    let elapsed = seconds(clock.now - start)
    placeTimes.append(elapsed)
    FileHandle.standardError.write(Data("place round \(round): \(placed) tasks on \(nodeCount) nodes in \(String(format: "%.3f", elapsed)) s = \(Int(Double(placed) / elapsed)) tasks/s\n".utf8))
}

/// A store with the nodes (ready, labelled) and the services, no tasks.
func store(_ rng: inout SplitMix64) -> ClusterState {
    var state = ClusterState()
    var index: UInt64 = 0
    func run(_ command: [UInt8]) {
        index += 1
        _ = try! state.apply(index: index, command: command)
    }
    run(ClusterCommands.tokenCreate(JoinTokenRecord(
        id: "benchtok", role: .agent, secretSHA256: [UInt8](repeating: 1, count: 32), createdAtMs: 0, expiresAtMs: .max)))
    for node in nodes(&rng) {
        let record = NodeRecord(id: node.id, name: node.name, labels: node.labels, address: "10.0.0.1", status: .ready, joinedAtMs: 0)
        run(ClusterCommands.nodeJoin(tokenID: "benchtok", nowMs: 1, nodeID: node.id, role: .agent, node: record))
    }
    for (position, request) in requests(&rng).enumerated() {
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = "svc-\(position)"
        spec.driver = "process"
        spec.command = "serve"
        spec.replicas = UInt32(taskCount / serviceCount)
        spec.resources.cpuReservationMillis = request.cpuMillis
        spec.resources.memoryReservationBytes = request.memoryBytes
        var service = Flotilla_V1_ServiceRecord()
        service.id = request.serviceID
        service.spec = ServiceSpecRules.normalized(spec)
        service.version = 1
        run(ClusterCommands.serviceCreate(service))
    }
    return state
}

var planTimes: [Double] = []
var planned = 0
for round in 1...rounds {
    var rng = SplitMix64(seed: UInt64(round))
    let state = store(&rng)
    var reconciler = Reconciler(seed: UInt64(round))
    let start = clock.now
    let plan = reconciler.plan(for: state, nowMs: 1_000)
    let elapsed = seconds(clock.now - start)
    planned = plan.writes.filter { !$0.nodeID.isEmpty }.count
    planTimes.append(elapsed)
    FileHandle.standardError.write(Data("plan round \(round): \(plan.writes.count) tasks (\(planned) placed) in \(String(format: "%.3f", elapsed)) s = \(Int(Double(planned) / elapsed)) placements/s\n".utf8))
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
print("""
{"nodes": \(nodeCount), "tasks": \(taskCount), "services": \(serviceCount), "rounds": \(rounds), \
"place_median_s": \(median(placeTimes)), "place_tasks_per_s": \(Int(Double(placed) / median(placeTimes))), \
"plan_median_s": \(median(planTimes)), "plan_placements_per_s": \(Int(Double(planned) / median(planTimes)))}
""")

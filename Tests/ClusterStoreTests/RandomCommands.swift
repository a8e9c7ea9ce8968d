import ClusterModel
import ClusterStore
import Messages

/// One log entry of a generated workload.
enum Entry {
    /// A command, for `apply`.
    case command([UInt8])
    /// Not a command (an empty entry or a membership change), for `skip`.
    case skip
}

/// Seeded random workloads: mostly valid commands over a small key space (so they collide), with check-and-set
/// indexes that are often right, and now and then an invalid key or a non-command entry.
struct Workload {
    static let keys = ["app/a", "app/b", "app/c/d", "app", "apple", "db/url", "db/password", "feature/x", "z", "Z", "0"]
    static let badKeys = ["", "/root", "two words", String(repeating: "x", count: 600)]
    static let controllerIDs = ["c1", "c2", "c3", "c10"]
    static let nodeIDs = ["n1", "n2", "n3", "n4"]
    static let tokenIDs = ["tokaaaaa", "tokbbbbb"]

    /// `count` entries from `seed`. Check-and-set indexes are drawn against a state that applies the workload as it
    /// is generated, so that about half of them match.
    static func make(seed: UInt64, count: Int) -> [Entry] {
        var rng = SplitMix64(seed: seed)
        var log = Log()
        var entries: [Entry] = []
        for _ in 0..<count {
            let entry = next(&rng, state: log.state)
            switch entry {
            case .command(let bytes): _ = try? log.run(bytes)
            case .skip: try? log.skip()
            }
            entries.append(entry)
        }
        return entries
    }

    private static func next(_ rng: inout SplitMix64, state: ClusterState) -> Entry {
        let requestID = rng.next()
        let key = rng.below(50) == 0 ? badKeys.randomElement(using: &rng)! : keys.randomElement(using: &rng)!
        switch rng.below(100) {
        case 0..<5:
            return .skip
        case 5..<55:
            let value = (0..<rng.below(24)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            return .command(ClusterCommands.varPut(key: key, value: value, cas: cas(&rng, key: key, state: state), requestID: requestID))
        case 55..<80:
            return .command(ClusterCommands.varDelete(key: key, cas: cas(&rng, key: key, state: state), requestID: requestID))
        case 80..<84:
            let role: NodeRole = rng.below(4) == 0 ? .controller : .agent
            let token = JoinTokenRecord(
                id: tokenIDs.randomElement(using: &rng)!, role: role, secretSHA256: [UInt8](repeating: 1, count: 32),
                createdAtMs: 1_000, expiresAtMs: 1_000 + UInt64(rng.below(5_000)), maxUses: UInt32(rng.below(3)))
            return .command(rng.below(5) == 0
                ? ClusterCommands.tokenRevoke(id: token.id, requestID: requestID)
                : ClusterCommands.tokenCreate(token, requestID: requestID))
        case 84..<90:
            let id = NodeID(nodeIDs.randomElement(using: &rng)!)
            let node = NodeRecord(
                id: id, name: "node-\(rng.below(3))", labels: ["zone": "z\(rng.below(2))"], address: "10.0.1.\(rng.below(9))",
                status: NodeRecord.Status.allCases.randomElement(using: &rng)!, joinedAtMs: 2_000)
            switch rng.below(4) {
            case 0: return .command(ClusterCommands.nodeUpsert(node, requestID: requestID))
            case 1: return .command(ClusterCommands.nodeRemove(id: id, nowMs: 3_000, requestID: requestID))
            default:
                return .command(ClusterCommands.nodeJoin(
                    tokenID: tokenIDs.randomElement(using: &rng)!, nowMs: 1_000 + UInt64(rng.below(6_000)), nodeID: id,
                    role: .agent, node: node, requestID: requestID))
            }
        case 90..<91:
            let id = ["svc-a", "svc-b"].randomElement(using: &rng)!
            var service = Flotilla_V1_ServiceRecord()
            service.id = id
            var spec = Flotilla_V1_ServiceSpec()
            spec.name = rng.below(3) == 0 ? "web" : id
            spec.driver = "process"
            spec.command = "run"
            spec.replicas = UInt32(rng.below(4))
            service.spec = spec
            service.version = 1
            switch rng.below(4) {
            case 0: return .command(ClusterCommands.serviceCreate(service, requestID: requestID))
            case 3:
                return .command(ClusterCommands.serviceScale(
                    id: id, expectedVersion: state.service(id)?.version ?? 1, replicas: UInt32(rng.below(5)), reason: "load", nowMs: 6_000,
                    requestID: requestID))
            case 1:
                let version = state.service(id)?.version ?? 0
                return .command(ClusterCommands.serviceUpdate(
                    id: id, spec: spec, expectedVersion: rng.below(2) == 0 ? version : 0, nowMs: 5_000, requestID: requestID))
            default:
                var task = Flotilla_V1_TaskRecord()
                task.id = "task-\(rng.below(6))"
                task.serviceID = id
                task.serviceVersion = state.service(id)?.version ?? 1
                task.slot = UInt32(rng.below(4))
                task.nodeID = rng.below(2) == 0 ? "" : nodeIDs.randomElement(using: &rng)!
                task.desiredState = rng.below(4) == 0 ? .shutdown : .running
                return .command(ClusterCommands.tasksWrite([task], deleting: rng.below(5) == 0 ? ["task-\(rng.below(6))"] : [], requestID: requestID))
            }
        case 91..<92:
            let id = controllerIDs.randomElement(using: &rng)!
            let address = rng.below(20) == 0 ? "no-port" : "10.0.0.\(rng.below(4)):7400"
            let record = ControllerRecord(id: NodeID(id), address: address, isVoter: Bool.random(using: &rng))
            return .command(ClusterCommands.controllerUpsert(record, requestID: requestID))
        case 92..<93:
            var event = Flotilla_V1_ClusterEvent()
            event.type = rng.below(10) == 0 ? "Not A Type" : "leader.elected"
            event.message = "c1 elected in term \(rng.below(9))"
            event.atMs = UInt64(rng.below(2)) * 7_000
            return .command(ClusterCommands.stamped(ClusterCommands.eventAppend(event, requestID: requestID), proposedAtMs: UInt64(rng.below(3)) * 1_000))
        default:
            return .command(ClusterCommands.controllerRemove(id: NodeID(controllerIDs.randomElement(using: &rng)!), requestID: requestID))
        }
    }

    /// nil (unconditional) a third of the time; otherwise the current index, 0, or a near miss.
    private static func cas(_ rng: inout SplitMix64, key: String, state: ClusterState) -> UInt64? {
        let current = state.variable(key)?.modifyIndex ?? 0
        switch rng.below(6) {
        case 0, 1: return nil
        case 2, 3: return current
        case 4: return 0
        default: return current + 1 + UInt64(rng.below(3))
        }
    }
}

extension Log {
    /// Applies an entry; commands must apply (the workload holds no refused entries).
    mutating func apply(_ entry: Entry) throws -> ApplyOutcome? {
        switch entry {
        case .command(let bytes): return try run(bytes)
        case .skip:
            try skip()
            return nil
        }
    }
}

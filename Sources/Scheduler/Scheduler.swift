public import ClusterModel
public import ClusterStore
import HeapModule

/// A node as the scheduler sees it: what it is, what it can hold, and what it already holds.
public struct SchedulingNode: Sendable, Hashable {
    public var id: NodeID
    public var name: String
    public var labels: [String: String]
    public var isReady: Bool
    public var availability: NodeRecord.Availability
    /// Capacity; nil when the agent has not reported it (then nothing is refused for lack of it).
    public var cpuCapacityMillis: UInt64?
    public var memoryCapacityBytes: UInt64?
    public var reservedCPUMillis: UInt64 = 0
    public var reservedMemoryBytes: UInt64 = 0
    /// Tasks of each service on this node (desired running).
    public var tasksByService: [String: Int] = [:]
    public var totalTasks: Int = 0
    /// Services whose tasks failed here recently: their new tasks avoid this node when they can.
    public var recentFailures: [String: Int] = [:]
    /// Ports that tasks publishing in host mode hold on this node.
    public var usedHostPorts: Set<UInt32> = []

    public init(
        id: NodeID, name: String, labels: [String: String] = [:], isReady: Bool = true, availability: NodeRecord.Availability = .active,
        cpuCapacityMillis: UInt64? = nil, memoryCapacityBytes: UInt64? = nil
    ) {
        self.id = id
        self.name = name
        self.labels = labels
        self.isReady = isReady
        self.availability = availability
        self.cpuCapacityMillis = cpuCapacityMillis
        self.memoryCapacityBytes = memoryCapacityBytes
    }

    /// Counts one more task of `request` here: its reservations, its service's and the node's task counts, its
    /// host ports.
    public mutating func reserve(_ request: PlacementRequest) {
        reservedCPUMillis += request.cpuMillis
        reservedMemoryBytes += request.memoryBytes
        tasksByService[request.serviceID, default: 0] += 1
        totalTasks += 1
        usedHostPorts.formUnion(request.hostPorts)
    }

    /// Counts one task of `request` less here (it stops).
    public mutating func release(_ request: PlacementRequest) {
        guard tasksByService[request.serviceID, default: 0] > 0 else { return }
        reservedCPUMillis -= min(reservedCPUMillis, request.cpuMillis)
        reservedMemoryBytes -= min(reservedMemoryBytes, request.memoryBytes)
        tasksByService[request.serviceID]! -= 1
        totalTasks -= 1
        usedHostPorts.subtract(request.hostPorts)
    }

    var freeCPU: UInt64? { cpuCapacityMillis.map { $0 > reservedCPUMillis ? $0 - reservedCPUMillis : 0 } }
    var freeMemory: UInt64? { memoryCapacityBytes.map { $0 > reservedMemoryBytes ? $0 - reservedMemoryBytes : 0 } }
}

/// What one service asks of a placement.
public struct PlacementRequest: Sendable, Hashable {
    public enum Strategy: String, Sendable, Hashable {
        /// Fewest tasks of this service, then fewest tasks overall (the default).
        case spread
        /// Fill the fullest node that fits first, keeping others free for large tasks.
        case binpack
    }

    public var serviceID: String
    public var cpuMillis: UInt64
    public var memoryBytes: UInt64
    public var constraints: [PlacementConstraint]
    /// 0: no limit.
    public var maxPerNode: Int
    /// A node label to spread over (zone), nil for none.
    public var spreadOverLabel: String?
    public var strategy: Strategy
    /// Ports the task publishes in host mode: it binds them on its node, so no two such tasks share a node.
    public var hostPorts: Set<UInt32>

    public init(
        serviceID: String, cpuMillis: UInt64 = 0, memoryBytes: UInt64 = 0, constraints: [PlacementConstraint] = [],
        maxPerNode: Int = 0, spreadOverLabel: String? = nil, strategy: Strategy = .spread, hostPorts: Set<UInt32> = []
    ) {
        self.hostPorts = hostPorts
        self.serviceID = serviceID
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.constraints = constraints
        self.maxPerNode = maxPerNode
        self.spreadOverLabel = spreadOverLabel
        self.strategy = strategy
    }
}

/// The outcome of placing some tasks.
public struct Placement: Sendable, Hashable {
    /// One node per task placed, in placement order.
    public var nodes: [NodeID]
    /// How many could not be placed.
    public var unplaced: Int
    /// Why not, when some could not: "3 nodes lack memory; 1 node is draining".
    public var explanation: String?
}

/// Places tasks on nodes: filters (ready, active, resources fit, constraints, max per node, host ports), then scores
/// (spread or binpack, spread over a label, avoiding nodes where the service failed recently). Pure and
/// deterministic: ties break by node id.
public enum Scheduler {
    /// Why a node cannot take a task, for the explanation.
    enum Refusal: Hashable, Comparable {
        case notReady, paused, draining, lacksCPU, lacksMemory, constraint(String), atMaxPerNode, hostPortInUse(UInt32)

        var phrase: (one: String, many: String) {
            switch self {
            case .notReady: ("node is not ready", "nodes are not ready")
            case .paused: ("node is paused", "nodes are paused")
            case .draining: ("node is draining", "nodes are draining")
            case .lacksCPU: ("node lacks CPU", "nodes lack CPU")
            case .lacksMemory: ("node lacks memory", "nodes lack memory")
            case .constraint(let text): ("node does not meet \(text)", "nodes do not meet \(text)")
            case .atMaxPerNode: ("node already runs the most tasks of this service it may", "nodes already run the most tasks of this service they may")
            case .hostPortInUse(let port): ("node has host port \(port) in use", "nodes have host port \(port) in use")
            }
        }
    }

    /// Places `count` tasks of `request`, updating `nodes` with what it placed (so a caller placing several
    /// services in turn sees each placement).
    ///
    /// Each node is checked once; the feasible ones go into a heap by score (per label value when spreading
    /// over a label), and each placement pops the best node, places, and pushes it back with its new score if
    /// it can take more. Placing elsewhere changes no other node's score or feasibility, so this picks exactly
    /// the node a scan of all nodes would, in O((nodes + tasks) · log nodes).
    public static func place(_ count: Int, _ request: PlacementRequest, on nodes: inout [SchedulingNode]) -> Placement {
        guard count > 0 else { return Placement(nodes: [], unplaced: 0, explanation: nil) }
        // Groups: one per value of the spread label (nodes without it form their own, last-resort group), or
        // a single group.
        var groups: [String?: Heap<Candidate>] = [:]
        var tasksPerValue: [String: Int] = [:]
        if let key = request.spreadOverLabel {
            for node in nodes {
                guard let value = node.labels[key] else { continue }
                tasksPerValue[value, default: 0] += node.tasksByService[request.serviceID, default: 0]
            }
        }
        for index in nodes.indices where refusal(nodes[index], request) == nil {
            let group = request.spreadOverLabel.map { nodes[index].labels[$0] } ?? nil
            groups[group, default: Heap()].insert(Candidate(score: score(nodes[index], request), index: index))
        }
        var placed: [NodeID] = []
        while placed.count < count {
            // The group to place in: with a spread label, the labelled value with the fewest tasks of this
            // service (then by name); unlabelled nodes only when no labelled one can take the task.
            let group: String??
            if request.spreadOverLabel != nil {
                let labelled = groups.keys.compactMap { $0 }.filter { !(groups[$0]?.isEmpty ?? true) }
                if let value = labelled.min(by: { (tasksPerValue[$0, default: 0], $0) < (tasksPerValue[$1, default: 0], $1) }) {
                    group = .some(value)
                } else {
                    group = (groups[nil]?.isEmpty ?? true) ? .none : .some(nil)
                }
            } else {
                group = (groups[nil]?.isEmpty ?? true) ? .none : .some(nil)
            }
            guard let chosen = group, let best = groups[chosen]?.popMin() else {
                return Placement(nodes: placed, unplaced: count - placed.count, explanation: explain(request, nodes))
            }
            let index = best.index
            nodes[index].reserve(request)
            placed.append(nodes[index].id)
            if let value = chosen { tasksPerValue[value, default: 0] += 1 }
            if refusal(nodes[index], request) == nil {
                groups[chosen]!.insert(Candidate(score: score(nodes[index], request), index: index))
            }
        }
        return Placement(nodes: placed, unplaced: 0, explanation: nil)
    }

    /// A feasible node in a placement heap.
    struct Candidate: Comparable {
        var score: Score
        var index: Int

        static func < (a: Candidate, b: Candidate) -> Bool { a.score < b.score }
        static func == (a: Candidate, b: Candidate) -> Bool { a.score == b.score && a.index == b.index }
    }

    /// The first reason a node cannot take one more task of `request`; nil when it can.
    static func refusal(_ node: SchedulingNode, _ request: PlacementRequest) -> Refusal? {
        guard node.isReady else { return .notReady }
        switch node.availability {
        case .active: break
        case .pause: return .paused
        case .drain: return .draining
        }
        if let free = node.freeCPU, free < request.cpuMillis { return .lacksCPU }
        if let free = node.freeMemory, free < request.memoryBytes { return .lacksMemory }
        for constraint in request.constraints where !satisfies(node, constraint) {
            return .constraint(describe(constraint))
        }
        if request.maxPerNode > 0 && node.tasksByService[request.serviceID, default: 0] >= request.maxPerNode {
            return .atMaxPerNode
        }
        if let port = request.hostPorts.intersection(node.usedHostPorts).min() { return .hostPortInUse(port) }
        return nil
    }

    public static func satisfies(_ node: SchedulingNode, _ constraint: PlacementConstraint) -> Bool {
        let actual: String?
        switch constraint.attribute {
        case .label(let key): actual = node.labels[key]
        case .name: actual = node.name
        case .role: actual = "agent"
        }
        return (actual == constraint.value) == constraint.equals
    }

    static func describe(_ constraint: PlacementConstraint) -> String {
        let attribute: String
        switch constraint.attribute {
        case .label(let key): attribute = "node.labels.\(key)"
        case .name: attribute = "node.name"
        case .role: attribute = "node.role"
        }
        return "\(attribute)\(constraint.equals ? "==" : "!=")\(constraint.value)"
    }

    /// The index of the best feasible node, or nil, by scanning every node: the reference `place` must agree
    /// with (the tests check it does).
    static func best(for request: PlacementRequest, among nodes: [SchedulingNode]) -> Int? {
        let feasible = nodes.indices.filter { refusal(nodes[$0], request) == nil }
        guard !feasible.isEmpty else { return nil }
        // Spread over a label first: among the label's values present on feasible nodes, the one with the fewest
        // tasks of this service (counted over all nodes carrying it); nodes without the label come last.
        var candidates = feasible
        if let key = request.spreadOverLabel {
            var perValue: [String: Int] = [:]
            for node in nodes {
                guard let value = node.labels[key] else { continue }
                perValue[value, default: 0] += node.tasksByService[request.serviceID, default: 0]
            }
            let labelled = feasible.filter { nodes[$0].labels[key] != nil }
            if let value = labelled.map({ nodes[$0].labels[key]! }).min(by: { (perValue[$0, default: 0], $0) < (perValue[$1, default: 0], $1) }) {
                candidates = labelled.filter { nodes[$0].labels[key] == value }
            }
        }
        return candidates.min { score(nodes[$0], request) < score(nodes[$1], request) }
    }

    /// Lower is better. Ties break by node id, so placement is deterministic.
    static func score(_ node: SchedulingNode, _ request: PlacementRequest) -> Score {
        let failures = node.recentFailures[request.serviceID, default: 0]
        let mine = node.tasksByService[request.serviceID, default: 0]
        switch request.strategy {
        case .spread:
            return Score(failures: failures, primary: mine, secondary: node.totalTasks, id: node.id.rawValue)
        case .binpack:
            // The least free memory (then CPU) first: fill nodes up; unknown capacity counts as empty.
            let freeMemory = node.freeMemory.map { Int(clamping: $0 >> 20) } ?? Int.max
            let freeCPU = node.freeCPU.map { Int(clamping: $0) } ?? Int.max
            return Score(failures: failures, primary: freeMemory, secondary: freeCPU, id: node.id.rawValue)
        }
    }

    struct Score: Comparable, Hashable {
        var failures: Int
        var primary: Int
        var secondary: Int
        var id: String

        static func < (a: Score, b: Score) -> Bool {
            (a.failures, a.primary, a.secondary, a.id) < (b.failures, b.primary, b.secondary, b.id)
        }
    }

    /// "3 nodes lack memory; 1 node is draining" — every node's first refusal, counted, most common first.
    static func explain(_ request: PlacementRequest, _ nodes: [SchedulingNode]) -> String {
        guard !nodes.isEmpty else { return "no nodes have joined the cluster" }
        var counts: [Refusal: Int] = [:]
        for node in nodes {
            if let refusal = refusal(node, request) { counts[refusal, default: 0] += 1 }
        }
        return counts.sorted { ($1.value, $0.key) < ($0.value, $1.key) }
            .map { refusal, count in "\(count) \(count == 1 ? refusal.phrase.one : refusal.phrase.many)" }
            .joined(separator: "; ")
    }
}

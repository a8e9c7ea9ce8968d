public import ClusterModel
public import ClusterStore
public import Messages

/// What the dispatcher sends a node when its assignments change: tasks added or changed, and tasks the node
/// no longer needs to know about (which must not run).
public struct AssignmentDelta: Sendable, Equatable {
    public var upserts: [Flotilla_V1_TaskAssignment] = []
    public var removed: [String] = []

    public init(upserts: [Flotilla_V1_TaskAssignment] = [], removed: [String] = []) {
        self.upserts = upserts
        self.removed = removed
    }

    public var isEmpty: Bool { upserts.isEmpty && removed.isEmpty }
}

/// The dispatcher's view of which tasks each node runs, kept up to date from the store's change stream, so the
/// leader sends each agent only what changed for it: O(changes) per store change, not O(agents × tasks).
///
/// Pure: it reads the state it is given and the changes it is told about. A task's node never changes once
/// placed (a replacement is a new task), so the index only learns placements and forgets deletions.
public struct AssignmentIndex: Sendable {
    /// What the node was last told about a task, to skip changes that do not concern the agent (a status
    /// report echoing back, a message changing).
    private struct Entry: Sendable, Equatable {
        var node: NodeID
        var service: String
        /// Whether the node should know of the task at all, and whether it should run.
        var relevant: Bool
        var desired: Flotilla_V1_TaskState
    }

    private var entries: [String: Entry] = [:]
    private var tasksByNode: [NodeID: Set<String>] = [:]

    public init() {}

    /// Starts again from a whole state (at start, and after a snapshot replaced the state).
    public mutating func rebuild(from state: ClusterState) {
        entries = [:]
        tasksByNode = [:]
        for task in state.tasks where !task.nodeID.isEmpty {
            record(task)
        }
    }

    /// Tasks the index knows on a node (tests, metrics).
    public func taskCount(on node: NodeID) -> Int { tasksByNode[node]?.count ?? 0 }

    /// The node's complete assignment set in `state`.
    public func complete(for node: NodeID, in state: ClusterState) -> [Flotilla_V1_TaskAssignment] {
        var digests: [String: String] = [:]
        return (tasksByNode[node] ?? []).sorted().compactMap { id in
            guard let task = state.task(id), task.nodeID == node.rawValue, Self.isRelevant(task) else { return nil }
            return Self.assignment(for: task, in: state, digests: &digests)
        }
    }

    /// Folds one applied command's changes into the index and returns what each node must be told.
    public mutating func apply(_ changes: [StoreChange], state: ClusterState) -> [NodeID: AssignmentDelta] {
        var touched: [String] = []
        var seen: Set<String> = []
        var forced: Set<String> = []
        for change in changes {
            switch change.table {
            case .tasks:
                if seen.insert(change.key).inserted { touched.append(change.key) }
            case .services:
                // A service's spec, name or existence shapes all of its tasks' assignments.
                for (id, entry) in entries where entry.service == change.key {
                    forced.insert(id)
                    if seen.insert(id).inserted { touched.append(id) }
                }
            default:
                continue
            }
        }
        var deltas: [NodeID: AssignmentDelta] = [:]
        var digests: [String: String] = [:]
        for id in touched {
            let before = entries[id]
            guard let task = state.task(id), !task.nodeID.isEmpty else {
                // Deleted (or never placed): the node forgets it.
                if let before {
                    forget(id, on: before.node)
                    if before.relevant { deltas[before.node, default: AssignmentDelta()].removed.append(id) }
                }
                continue
            }
            let after = record(task)
            guard after != before || forced.contains(id) else { continue }
            if after.relevant {
                deltas[after.node, default: AssignmentDelta()].upserts.append(Self.assignment(for: task, in: state, digests: &digests))
            } else if before?.relevant == true {
                deltas[after.node, default: AssignmentDelta()].removed.append(id)
            }
        }
        return deltas
    }

    @discardableResult
    private mutating func record(_ task: Flotilla_V1_TaskRecord) -> Entry {
        let node = NodeID(task.nodeID)
        let entry = Entry(node: node, service: task.serviceID, relevant: Self.isRelevant(task), desired: task.desiredState)
        entries[task.id] = entry
        tasksByNode[node, default: []].insert(task.id)
        return entry
    }

    private mutating func forget(_ id: String, on node: NodeID) {
        entries[id] = nil
        tasksByNode[node]?.remove(id)
        if tasksByNode[node]?.isEmpty == true { tasksByNode[node] = nil }
    }

    /// A node must know of a task that should run there, and of one to stop that may still run.
    static func isRelevant(_ task: Flotilla_V1_TaskRecord) -> Bool {
        task.desiredState == .running || ![.complete, .failed, .shutdown, .orphaned].contains(task.state)
    }

    /// The assignment for one placed task. `digests` caches one spec digest per service (it serializes the spec).
    static func assignment(
        for task: Flotilla_V1_TaskRecord, in state: ClusterState, digests: inout [String: String]
    ) -> Flotilla_V1_TaskAssignment {
        var assignment = Flotilla_V1_TaskAssignment()
        assignment.taskID = task.id
        assignment.serviceID = task.serviceID
        assignment.desiredState = task.desiredState
        assignment.slot = task.slot
        assignment.nodeID = task.nodeID
        assignment.nodeName = state.node(NodeID(task.nodeID))?.name ?? ""
        // The service is gone: the task must stop; the spec no longer matters.
        guard let service = state.service(task.serviceID) else {
            assignment.desiredState = .shutdown
            return assignment
        }
        assignment.serviceName = service.spec.name
        let digest = digests[service.id] ?? ServiceSpecRules.taskDigest(service.spec)
        digests[service.id] = digest
        // The spec the task was made for: the current one, or the previous during an update.
        assignment.spec = task.specDigest == digest || !service.hasPreviousSpec ? service.spec : service.previousSpec
        return assignment
    }
}

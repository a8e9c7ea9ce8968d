public import Messages

/// Whatever acts on the leader's assignments for an agent session: the `TaskWorker` on a real node, a simulated
/// one in benchmarks. The session hands it every update and asks it, at each heartbeat, for its task state
/// changes and the assignment generation it has applied.
public protocol AssignmentReceiver: Sendable {
    /// One assignment update from the leader, in order.
    func apply(_ update: Flotilla_V1_SessionUpdate) async
    /// State changes since the last call, for the next heartbeat.
    func takeStatuses() async -> [Flotilla_V1_TaskStatus]
    /// Statuses a heartbeat could not send, to go out with the next.
    func requeue(_ unsent: [Flotilla_V1_TaskStatus]) async
    /// Where the receiver stands: the generation applied, and whether it needs the complete set.
    func position() async -> AssignmentSequence.Position
    /// The node's images, reported to the leader when they change.
    func images() async -> [Flotilla_V1_NodeImage]
    /// CPU and memory of every running task, read from their cgroups now (those the runtime can read).
    func taskUsage() async -> [Flotilla_V1_TaskUsage]
}

extension AssignmentReceiver {
    public func images() async -> [Flotilla_V1_NodeImage] { [] }
    public func taskUsage() async -> [Flotilla_V1_TaskUsage] { [] }
}

/// The order check on one session's assignment updates: a complete set is always taken; a change only on top
/// of the generation before it. After a gap, changes are refused until a complete set arrives (the heartbeat
/// asks for one).
public struct AssignmentSequence: Sendable {
    public struct Position: Sendable, Equatable {
        public var generation: UInt64
        public var needsResync: Bool
    }

    /// What to do with an update.
    public enum Step: Sendable, Equatable {
        /// The whole truth: run these, and nothing else.
        case complete([Flotilla_V1_TaskAssignment])
        /// On top of what runs: these added or changed, these no longer assigned.
        case change(upserts: [Flotilla_V1_TaskAssignment], removed: [String])
        /// Out of order (or not about assignments): ignore it.
        case ignore
    }

    public private(set) var position = Position(generation: 0, needsResync: false)

    public init() {}

    /// Judges `update` and moves the position on when it is taken.
    public mutating func accept(_ update: Flotilla_V1_SessionUpdate) -> Step {
        if update.assignmentsComplete {
            position = Position(generation: update.assignmentsGeneration, needsResync: false)
            return .complete(update.assignments)
        }
        guard update.assignmentsGeneration != 0 else { return .ignore }
        guard !position.needsResync, update.assignmentsGeneration == position.generation + 1 else {
            position.needsResync = true
            return .ignore
        }
        position.generation = update.assignmentsGeneration
        return .change(upserts: update.assignments, removed: update.removedTaskIds)
    }
}

public import Messages
internal import ClusterModel

// MARK: - Events: derived from the rows each command changed, and EventAppend

/// The rows a command may change, as they were before it applied: what its events compare the new rows with.
/// Only the rows the command names are kept, so deriving events costs nothing per row of the whole state.
struct RowsBefore {
    var services: [String: Flotilla_V1_ServiceRecord] = [:]
    var tasks: [String: Flotilla_V1_TaskRecord] = [:]
    var nodes: [NodeID: NodeRecord] = [:]
    var controllers: [NodeID: ControllerRecord] = [:]
}

extension ClusterState {
    /// Events kept in the state and its snapshots; older ones are dropped (their ids are not reused).
    public static let eventsKept = 1_000

    /// The longest event type and message an EventAppend may carry, in bytes.
    static let maxEventTypeBytes = 64
    static let maxEventMessageBytes = 1_024

    /// The rows `command` may change, read before it applies.
    func rowsBefore(_ command: Flotilla_V1_ClusterCommand.OneOf_Command) -> RowsBefore {
        var rows = RowsBefore()
        func service(_ id: String) { rows.services[id] = serviceTable[id] }
        func node(_ id: String) { rows.nodes[NodeID(id)] = nodeTable[NodeID(id)] }
        switch command {
        case .serviceCreate(let create): service(create.service.id)
        case .serviceUpdate(let update): service(update.id)
        case .serviceRemove(let remove): service(remove.id)
        case .serviceScale(let scale): service(scale.id)
        case .serviceStatusUpdate(let update): service(update.id)
        case .tasksWrite(let write):
            for id in write.tasks.map(\.id) + write.deleteIds { rows.tasks[id] = taskTable[id] }
        case .taskStatusReport(let report):
            for status in report.statuses { rows.tasks[status.taskID] = taskTable[status.taskID] }
        case .nodeJoin(let join): node(join.nodeID)
        case .nodeUpsert(let upsert): node(upsert.node.id)
        case .nodeRemove(let remove): node(remove.id)
        case .controllerUpsert(let upsert): rows.controllers[NodeID(upsert.controller.id)] = controllerTable[NodeID(upsert.controller.id)]
        case .controllerRemove(let remove): rows.controllers[NodeID(remove.id)] = controllerTable[NodeID(remove.id)]
        case .varPut, .varDelete, .tokenCreate, .tokenRevoke, .clusterCaSet, .eventAppend: break
        }
        return rows
    }

    /// Records the events of a command that applied successfully: one per transition its changes show, compared
    /// with `before`; appended to `changes` as rows of the events table.
    mutating func recordEvents(
        of command: Flotilla_V1_ClusterCommand, _ kind: Flotilla_V1_ClusterCommand.OneOf_Command, before: RowsBefore,
        at index: UInt64, changes: inout [StoreChange]
    ) {
        let atMs = command.proposedAtMs != 0 ? command.proposedAtMs : Self.timeCarried(by: kind)
        var events: [Flotilla_V1_ClusterEvent] = []
        if case .eventAppend(let append) = kind {
            var event = append.event
            if event.atMs == 0 { event.atMs = atMs }
            events.append(event)
        }
        var tasksOfService: [String: [Flotilla_V1_TaskRecord]] = [:]
        for change in changes {
            switch change.table {
            case .services:
                events += serviceEvents(change, kind, before: before.services[change.key])
            case .tasks:
                guard change.kind == .put, let task = taskTable[change.key] else { continue }
                events += taskEvents(task, before: before.tasks[change.key], tasksOfService: &tasksOfService)
            case .nodes:
                events += nodeEvents(change, before: before.nodes[NodeID(change.key)])
            case .controllers:
                let id = NodeID(change.key)
                if change.kind == .delete {
                    events.append(event("controller.removed", node: id, name: id.rawValue, "removed from the cluster"))
                } else if before.controllers[id] == nil, let record = controllerTable[id] {
                    events.append(event("controller.joined", node: id, name: id.rawValue, "joined at \(record.address)"))
                }
            default:
                continue
            }
        }
        // A plan that replaces tasks tells of the ends first, then the replacements (each group in task-id order).
        let ending: Set<String> = ["task.stopped", "task.failed"]
        events = events.filter { ending.contains($0.type) } + events.filter { !ending.contains($0.type) }
        append(events, index: index, atMs: atMs, changes: &changes)
    }

    /// Gives `events` their ids, index and time, appends them and drops the oldest beyond ``eventsKept``.
    private mutating func append(_ events: [Flotilla_V1_ClusterEvent], index: UInt64, atMs: UInt64, changes: inout [StoreChange]) {
        guard !events.isEmpty else { return }
        var added: [StoreChange] = []
        for var event in events {
            lastEventID += 1
            event.id = lastEventID
            event.index = index
            if event.atMs == 0 { event.atMs = atMs }
            eventLog.append(event)
            added.append(StoreChange(table: .events, key: String(event.id), kind: .put, index: index))
        }
        let surplus = max(0, eventLog.count - Self.eventsKept)
        // Listed in id order: the dropped (oldest) first, then the new ones.
        let dropped = eventLog.prefix(surplus).map { StoreChange(table: .events, key: String($0.id), kind: .delete, index: index) }
        eventLog.removeFirst(surplus)
        changes += dropped + added
    }

    /// A time the command itself carries, for commands proposed before `proposed_at_ms` existed; 0 when none.
    private static func timeCarried(by kind: Flotilla_V1_ClusterCommand.OneOf_Command) -> UInt64 {
        switch kind {
        case .serviceUpdate(let update): update.nowMs
        case .serviceScale(let scale): scale.nowMs
        case .nodeJoin(let join): join.nowMs
        case .nodeRemove(let remove): remove.nowMs
        case .nodeUpsert(let upsert): upsert.node.statusChangedAtMs
        case .tasksWrite(let write): write.tasks.map { max($0.createdAtMs, $0.stateChangedAtMs) }.max() ?? 0
        case .taskStatusReport(let report): report.statuses.map(\.atMs).max() ?? 0
        case .eventAppend(let append): append.event.atMs
        default: 0
        }
    }

    // MARK: - EventAppend

    mutating func applyEventAppend(_ append: Flotilla_V1_EventAppend, at index: UInt64) -> ApplyResult {
        guard append.hasEvent else { return .invalid("an EventAppend command must carry an event") }
        let event = append.event
        let type = Array(event.type.utf8)
        guard (3...Self.maxEventTypeBytes).contains(type.count), type.contains(0x2E),
              type.allSatisfy({ (0x61...0x7A).contains($0) || $0 == 0x2E || $0 == 0x2D }) else {
            return .invalid("event type \(quoted(event.type, limit: 70)) must be 3 to \(Self.maxEventTypeBytes) lowercase letters, '.' and '-', with a dot (\"leader.elected\")")
        }
        guard event.message.utf8.count <= Self.maxEventMessageBytes else {
            return .invalid("an event's message is at most \(Self.maxEventMessageBytes) bytes, not \(event.message.utf8.count)")
        }
        return .ok(index: index)
    }

    // MARK: - Deriving

    private func serviceEvents(
        _ change: StoreChange, _ kind: Flotilla_V1_ClusterCommand.OneOf_Command, before: Flotilla_V1_ServiceRecord?
    ) -> [Flotilla_V1_ClusterEvent] {
        guard let service = serviceTable[change.key] else {
            guard let before else { return [] }
            return [event("service.removed", service: before, "removed")]
        }
        guard let before else {
            let shape = service.spec.mode == .global ? "global" : "\(service.spec.replicas) replicas"
            return [event("service.created", service: service, "created (\(shape))")]
        }
        switch kind {
        case .serviceScale(let scale):
            let reason = scale.reason.isEmpty ? "scaled \(before.spec.replicas) → \(service.spec.replicas)" : scale.reason
            return [event("service.scaled", service: service, reason)]
        case .serviceUpdate(let update) where update.rollback:
            let why = service.updateStatus.message.isEmpty ? "" : ": \(service.updateStatus.message)"
            return [event("service.rolled-back", service: service, "rolling back to its previous spec (version \(service.version))\(why)")]
        case .serviceUpdate:
            var scaledOnly = before.spec
            scaledOnly.replicas = service.spec.replicas
            if scaledOnly == service.spec && before.spec.replicas != service.spec.replicas {
                return [event("service.scaled", service: service, "scaled \(before.spec.replicas) → \(service.spec.replicas) by an admin")]
            }
            return [event("service.updated", service: service, "updated to version \(service.version)")]
        default:
            // Rolling-update progress (ServiceStatusUpdate) is shown by `service inspect`, not as events.
            return []
        }
    }

    private func taskEvents(
        _ task: Flotilla_V1_TaskRecord, before: Flotilla_V1_TaskRecord?, tasksOfService: inout [String: [Flotilla_V1_TaskRecord]]
    ) -> [Flotilla_V1_ClusterEvent] {
        var events: [Flotilla_V1_ClusterEvent] = []
        let node = task.nodeID.isEmpty ? nil : NodeID(task.nodeID)
        if let node, before?.nodeID.isEmpty ?? true {
            var message = task.slot == 0 ? "on \(nodeName(node))" : "slot \(task.slot) on \(nodeName(node))"
            if task.slot != 0 {
                let siblings = tasksOfService[task.serviceID] ?? taskTable.values.filter { $0.serviceID == task.serviceID }
                tasksOfService[task.serviceID] = siblings
                if let from = Self.predecessor(of: task, among: siblings), let reason = movedReason(from) {
                    message += ", rescheduled from \(nodeName(NodeID(from.nodeID))) (\(reason))"
                }
            }
            events.append(event("task.assigned", task: task, message))
        }
        if (before?.restarts ?? 0) < task.restarts {
            events.append(event("task.restarted", task: task, "restarted in place (\(task.restarts) in all)" + Self.because(task.message)))
        }
        guard before?.state != task.state else { return events }
        switch task.state {
        case .running:
            events.append(event("task.started", task: task, node.map { "running on \(nodeName($0))" } ?? "running"))
        case .failed:
            let exit = task.exitCode != 0 ? "exited with code \(task.exitCode)" : "failed"
            events.append(event("task.failed", task: task, exit + Self.because(task.message)))
        case .complete, .shutdown, .orphaned:
            events.append(event("task.stopped", task: task, Self.stateName(task.state) + Self.because(task.message)))
        default:
            break
        }
        return events
    }

    /// The task `task` replaces: another of its slot, on another node, told to stop.
    private static func predecessor(of task: Flotilla_V1_TaskRecord, among siblings: [Flotilla_V1_TaskRecord]) -> Flotilla_V1_TaskRecord? {
        siblings
            .filter { $0.id != task.id && $0.slot == task.slot && !$0.nodeID.isEmpty && $0.nodeID != task.nodeID && $0.desiredState == .shutdown }
            .max { ($0.stateChangedAtMs, $0.id) < ($1.stateChangedAtMs, $1.id) }
    }

    /// Why a task left `previous`'s node, when the node shows it: down, draining or gone.
    private func movedReason(_ previous: Flotilla_V1_TaskRecord) -> String? {
        guard let node = nodeTable[NodeID(previous.nodeID)] else { return "left the cluster" }
        if node.status == .down { return "down" }
        if node.availability == .drain { return "draining" }
        return nil
    }

    private func nodeEvents(_ change: StoreChange, before: NodeRecord?) -> [Flotilla_V1_ClusterEvent] {
        guard let node = nodeTable[NodeID(change.key)] else {
            guard let before else { return [] }
            return [event("node.removed", node: before.id, name: before.name, "removed from the cluster; its identity is revoked")]
        }
        guard let before else {
            return [event("node.joined", node: node.id, name: node.name, "joined at \(node.address)")]
        }
        var events: [Flotilla_V1_ClusterEvent] = []
        if before.status != node.status {
            switch node.status {
            case .ready: events.append(event("node.ready", node: node.id, name: node.name, "heartbeating"))
            case .down: events.append(event("node.down", node: node.id, name: node.name, "missed its heartbeats; its tasks are replaced elsewhere"))
            case .unknown: break
            }
        }
        if before.availability != node.availability {
            switch node.availability {
            case .drain: events.append(event("node.drained", node: node.id, name: node.name, "draining: its tasks move to other nodes"))
            case .active: events.append(event("node.active", node: node.id, name: node.name, "active: takes new tasks (was \(before.availability.rawValue))"))
            case .pause: break
            }
        }
        return events
    }

    // MARK: - Building events

    private func event(_ type: String, service: Flotilla_V1_ServiceRecord, _ message: String) -> Flotilla_V1_ClusterEvent {
        var event = Flotilla_V1_ClusterEvent()
        event.type = type
        event.serviceID = service.id
        event.serviceName = service.spec.name
        event.message = message
        return event
    }

    private func event(_ type: String, node: NodeID, name: String, _ message: String) -> Flotilla_V1_ClusterEvent {
        var event = Flotilla_V1_ClusterEvent()
        event.type = type
        event.nodeID = node.rawValue
        event.nodeName = name
        event.message = message
        return event
    }

    private func event(_ type: String, task: Flotilla_V1_TaskRecord, _ message: String) -> Flotilla_V1_ClusterEvent {
        var event = Flotilla_V1_ClusterEvent()
        event.type = type
        event.taskID = task.id
        event.serviceID = task.serviceID
        event.serviceName = serviceTable[task.serviceID]?.spec.name ?? ""
        if !task.nodeID.isEmpty {
            event.nodeID = task.nodeID
            event.nodeName = nodeName(NodeID(task.nodeID))
        }
        event.message = message
        return event
    }

    /// A node's name, or its id once it has left.
    private func nodeName(_ id: NodeID) -> String { nodeTable[id]?.name ?? id.rawValue }

    private static func because(_ message: String) -> String { message.isEmpty ? "" : ": \(message)" }

    private static func stateName(_ state: Flotilla_V1_TaskState) -> String {
        switch state {
        case .complete: "complete"
        case .shutdown: "shut down"
        case .orphaned: "orphaned"
        default: "stopped"
        }
    }
}

// MARK: - Reading

extension ClusterState {
    /// The kept events, oldest first (at most ``eventsKept``; ids count up by one).
    public var events: [Flotilla_V1_ClusterEvent] { eventLog }

    /// The kept events with an id above `id`, oldest first.
    public func events(after id: UInt64) -> ArraySlice<Flotilla_V1_ClusterEvent> {
        guard id >= firstKept else { return eventLog[...] }
        let offset = Int(min(id - firstKept + 1, UInt64(eventLog.count)))
        return eventLog[offset...]
    }

    /// How many events with an id above `id` are no longer kept: a reader that resumes after `id` missed them.
    public func eventsDropped(after id: UInt64) -> UInt64 {
        // firstKept is at least 1; any id a reader sends (UInt64.max included) is safe here.
        firstKept - 1 > id ? firstKept - 1 - id : 0
    }

    /// The id of the oldest kept event (lastEventID + 1 when none is kept): kept ids run without gaps up to
    /// lastEventID, so a position in the history is arithmetic.
    private var firstKept: UInt64 { lastEventID - UInt64(eventLog.count) + 1 }
}

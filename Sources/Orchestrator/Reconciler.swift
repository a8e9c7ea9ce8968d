import ClusterModel
public import ClusterStore
public import Messages
import Scheduler

/// What the orchestrator wants committed: tasks to write whole, and finished tasks to forget.
public struct TaskPlan: Sendable, Equatable {
    public var writes: [Flotilla_V1_TaskRecord] = []
    public var deletes: [String] = []
    /// Rolling-update progress to record, per service (at the version it is about).
    public var statusUpdates: [ServiceStatusChange] = []
    /// Services whose update failed with failure action `rollback`: the leader rolls them back.
    public var rollbacks: [String] = []

    public var isEmpty: Bool { writes.isEmpty && deletes.isEmpty && statusUpdates.isEmpty && rollbacks.isEmpty }
}

/// A rolling update's new status for one version of a service.
public struct ServiceStatusChange: Sendable, Equatable {
    public var serviceID: String
    public var version: UInt64
    public var status: Flotilla_V1_UpdateStatus
}

/// Reconciles services into tasks, as a pure function of the store (Nomad's and Swarm's orchestrators, minus
/// the I/O). A task never moves: a task that must go elsewhere is shut down and a new task takes its slot.
///
/// - Replicated services: slots 1…replicas each have one live task; surplus slots are shut down.
/// - Global services: one live task per eligible node (ready, not draining, constraints met); paused nodes keep
///   theirs but get no new one.
/// - Tasks on a node that is down are orphaned and replaced (unless every node is down, or most fell silent at
///   once: then they stay); tasks on
///   a draining node are shut down and replaced;
///   tasks that stopped are replaced as the restart policy says.
/// - New tasks are placed by the `Scheduler`; what cannot be placed stays pending with the reason.
/// - Removed services have their tasks shut down. Finished tasks are kept as history (the last
///   `historyPerSlot` per slot), older ones are deleted.
///
/// Rolling updates: a live task whose spec digest is not the service's current one is out of date. It is
/// replaced `parallelism` at a time (0: all at once), `delay` apart, stop-first (the old task stops, then its
/// slot is refilled) or start-first (the new task starts beside it; the old one stops once the new one runs).
/// New tasks are watched for `monitor`; when the share that failed exceeds `max_failure_ratio`, the failure
/// action decides: pause (the update stops where it is), rollback (the leader proposes the previous spec) or
/// continue. Everything it needs is in the store, so a new leader continues an update where the old one was.
public struct Reconciler: Sendable {
    public var historyPerSlot = 3
    private var random: SplitMix64

    public init(seed: UInt64) {
        random = SplitMix64(seed: seed)
    }

    /// A fresh task id (the leader's randomness, injected so tests are deterministic).
    mutating func newID() -> String {
        let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")
        var id = "t-"
        for _ in 0..<14 { id.append(alphabet[Int(random.next() % UInt64(alphabet.count))]) }
        return id
    }

    /// `disrupted`: most nodes fell silent at once (`NodeLiveness.disrupted`); tasks on down nodes then stay.
    public mutating func plan(for state: ClusterState, nowMs: UInt64, disrupted: Bool = false) -> TaskPlan {
        var plan = TaskPlan()
        var changed: [String: Flotilla_V1_TaskRecord] = [:]
        var created: [Flotilla_V1_TaskRecord] = []
        let nodes = Dictionary(uniqueKeysWithValues: state.nodes.map { ($0.id.rawValue, $0) })
        var scheduling = Self.schedulingNodes(state)

        func stop(_ task: Flotilla_V1_TaskRecord, state newState: Flotilla_V1_TaskState? = nil, _ message: String) {
            var task = changed[task.id] ?? task
            guard task.desiredState != .shutdown || (newState != nil && task.state != newState) else { return }
            task.desiredState = .shutdown
            if let newState {
                task.state = newState
                task.stateChangedAtMs = nowMs
            }
            task.message = message
            changed[task.id] = task
            Self.release(task, from: &scheduling, state: state)
        }

        let tasksByService = Dictionary(grouping: state.tasks, by: \.serviceID)
        // Tasks of removed services wind down.
        for (serviceID, tasks) in tasksByService where state.service(serviceID) == nil {
            for task in tasks where task.desiredState == .running { stop(task, "service removed") }
        }

        // Every node down at once, or most falling silent together, is the leader's own isolation far more often
        // than every machine failing (a leader cut off, a new leader that hears no agent yet): orphaning would
        // empty every balancer's table and place little anywhere. So tasks stay until the nodes are back
        // (Kubernetes' full-disruption rule).
        let everyNodeDown = disrupted || (!nodes.isEmpty && nodes.values.allSatisfy { $0.status == .down })

        for service in state.services {
            let spec = service.spec
            let tasks = tasksByService[service.id] ?? []
            let request = Self.request(service)
            // 1. Tasks that can no longer run where they are.
            for task in tasks where task.desiredState == .running {
                if !task.nodeID.isEmpty, let node = nodes[task.nodeID] {
                    if node.status == .down && !everyNodeDown && !Self.isTerminal(task.state) {
                        stop(task, state: .orphaned, "node \(node.name) is down")
                    } else if node.availability == .drain {
                        stop(task, "node \(node.name) is draining")
                    }
                } else if !task.nodeID.isEmpty {
                    stop(task, state: .orphaned, "node \(task.nodeID) left the cluster")
                }
            }
            // 2. Tasks that stopped by themselves: replaced, or not, as the restart policy says. One that is not
            //    replaced keeps its slot (desired running, observed finished), so the slot stays empty, as Swarm does.
            for task in tasks where task.desiredState == .running && changed[task.id] == nil && Self.isTerminal(task.state) {
                let replace: Bool
                switch spec.restartPolicy.condition {
                case "none": replace = false
                case "on-failure": replace = task.state == .failed
                default: replace = true
                }
                guard replace else { continue }
                // Not at once: a task that cannot start (a missing image) would otherwise be replaced in a loop.
                guard nowMs >= task.stateChangedAtMs + Self.replacementDelay(task, of: tasks, policy: spec.restartPolicy, nowMs: nowMs) else {
                    continue
                }
                if let limit = Self.restartLimitReached(task, of: tasks, policy: spec.restartPolicy, nowMs: nowMs) {
                    if task.message != limit && !task.message.hasSuffix("; " + limit) {
                        var kept = task
                        kept.message = task.message.isEmpty ? limit : task.message + "; " + limit
                        changed[task.id] = kept
                    }
                    continue
                }
                stop(task, "replaced after it \(task.state == .failed ? "failed" : "exited")")
            }
            let digest = ServiceSpecRules.taskDigest(spec)
            var live = tasks.map { changed[$0.id] ?? $0 }.filter { $0.desiredState == .running }
            // 3. A rolling update replaces out-of-date tasks, a batch at a time.
            let update = rollingUpdate(service, tasks: tasks, live: live, digest: digest, nowMs: nowMs, plan: &plan)
            for task in update.stop { stop(task, "replaced by version \(service.version)") }
            var startFirstSlots = update.startFirst
            live = tasks.map { changed[$0.id] ?? $0 }.filter { $0.desiredState == .running }

            switch spec.mode {
            case .global:
                let eligible = scheduling.filter { node in
                    node.isReady && node.availability == .active && request.constraints.allSatisfy { Scheduler.satisfies(node, $0) }
                }
                let liveNodes = Set(live.map(\.nodeID))
                // A node keeps its task while it is not draining and still meets the constraints (paused included).
                func keeps(_ node: SchedulingNode) -> Bool {
                    node.availability != .drain && request.constraints.allSatisfy { Scheduler.satisfies(node, $0) }
                }
                for task in live where !scheduling.contains(where: { $0.id.rawValue == task.nodeID && keeps($0) }) {
                    stop(task, "node no longer eligible")
                }
                for node in eligible where !liveNodes.contains(node.id.rawValue) {
                    var task = Self.newTask(id: newID(), service: service, slot: 0, nowMs: nowMs)
                    task.nodeID = node.id.rawValue
                    task.state = .assigned
                    if let index = scheduling.firstIndex(where: { $0.id == node.id }) {
                        scheduling[index].reserve(request)
                    }
                    created.append(task)
                }
            default:
                let replicas = Int(spec.replicas)
                // Surplus: the highest slots go first; a slot with two live tasks keeps the newest version.
                var bySlot = Dictionary(grouping: live, by: \.slot)
                for (slot, slotTasks) in bySlot {
                    let ordered = slotTasks.sorted { ($0.serviceVersion, $0.createdAtMs, $0.id) > ($1.serviceVersion, $1.createdAtMs, $1.id) }
                    if Int(slot) > replicas || slot == 0 {
                        for task in ordered { stop(task, "scaled down") }
                        bySlot[slot] = nil
                    } else if ordered.count > 1 {
                        // Start-first: an out-of-date task keeps its slot until its replacement runs.
                        let newest = ordered[0]
                        if newest.state == .running || newest.specDigest != digest {
                            for task in ordered.dropFirst() { stop(task, "replaced in slot \(slot)") }
                        } else {
                            for task in ordered.dropFirst() where task.specDigest == digest { stop(task, "duplicate in slot \(slot)") }
                        }
                    }
                }
                let missing = (1...max(replicas, 1)).prefix(replicas).map(UInt32.init).filter { slot in
                    if bySlot[slot] == nil { return true }
                    // Start-first: a new task beside the out-of-date one.
                    return startFirstSlots.remove(slot) != nil
                }
                let placement = Scheduler.place(missing.count, request, on: &scheduling)
                for (position, slot) in missing.enumerated() {
                    var task = Self.newTask(id: newID(), service: service, slot: slot, nowMs: nowMs)
                    if position < placement.nodes.count {
                        task.nodeID = placement.nodes[position].rawValue
                        task.state = .assigned
                    } else {
                        task.message = placement.explanation ?? "no node can take it"
                    }
                    created.append(task)
                }
            }
            // Pending tasks from earlier rounds: place them now if the cluster changed.
            for task in live where task.nodeID.isEmpty && changed[task.id] == nil && task.state == .pending {
                let placement = Scheduler.place(1, request, on: &scheduling)
                var updated = task
                if let node = placement.nodes.first {
                    updated.nodeID = node.rawValue
                    updated.state = .assigned
                    updated.stateChangedAtMs = nowMs
                    updated.message = ""
                } else {
                    updated.message = placement.explanation ?? updated.message
                }
                if updated != task { changed[task.id] = updated }
            }
        }
        plan.writes = changed.values.sorted { $0.id < $1.id } + created
        plan.deletes = Self.expiredHistory(state, keep: historyPerSlot, changed: changed)
        return plan
    }

    // MARK: - Rolling updates

    /// What the rolling update of `service` does this round: out-of-date tasks to stop (stop-first and global),
    /// slots to start a new task in beside the old one (start-first), and status changes in `plan`.
    func rollingUpdate(
        _ service: Flotilla_V1_ServiceRecord, tasks: [Flotilla_V1_TaskRecord], live: [Flotilla_V1_TaskRecord], digest: String,
        nowMs: UInt64, plan: inout TaskPlan
    ) -> (stop: [Flotilla_V1_TaskRecord], startFirst: Set<UInt32>) {
        var status = service.updateStatus
        let rollingBack = status.state == "rolling-back"
        guard status.state == "updating" || rollingBack else { return ([], []) }
        let config = rollingBack ? service.spec.rollbackConfig : service.spec.updateConfig
        let outdated = live.filter { $0.specDigest != digest }.sorted { ($0.slot, $0.nodeID, $0.id) < ($1.slot, $1.nodeID, $1.id) }
        let fresh = tasks.filter { $0.specDigest == digest && $0.createdAtMs >= status.startedAtMs }
        let monitor = UInt64(config.monitorMs)
        // A new task that crashed counts as failed, also while its agent restarts it in place.
        let failed = fresh.filter { $0.state == .failed || $0.restarts > 0 }.count
        func record(_ state: String, _ message: String) {
            status.state = state
            status.message = message
            plan.statusUpdates.append(ServiceStatusChange(serviceID: service.id, version: service.version, status: status))
        }
        // Judge the new tasks: too many failures stop, roll back, or are ignored.
        if failed > 0, Double(failed) / Double(max(fresh.count, 1)) > config.maxFailureRatio {
            let why = "\(failed) of \(fresh.count) updated tasks failed (max failure ratio \(config.maxFailureRatio))"
            switch (rollingBack, config.failureAction) {
            case (false, "rollback"):
                record("rollback-started", why + "; rolling back")
                plan.rollbacks.append(service.id)
                return ([], [])
            case (_, "continue"):
                break
            default:
                record("paused", why + "; resume with flotilla service update, or roll back")
                return ([], [])
            }
        }
        if outdated.isEmpty {
            // Done once every placed task has run through its monitor period (a task no node can take yet is the
            // scheduler's business, not the update's).
            let settled = live.filter { !$0.nodeID.isEmpty }.allSatisfy { $0.state == .running && $0.stateChangedAtMs + monitor <= nowMs }
            if settled { record(rollingBack ? "rolled-back" : "completed", rollingBack ? status.message : "") }
            return ([], [])
        }
        // In flight: new tasks not running yet, or still being watched.
        let inFlight = fresh.filter { task in
            task.desiredState == .running && (task.state != .running || task.stateChangedAtMs + monitor > nowMs)
        }.count
        let parallelism = config.parallelism == 0 ? outdated.count : Int(config.parallelism)
        guard inFlight < parallelism, nowMs >= status.lastBatchAtMs + UInt64(config.delayMs) else { return ([], []) }
        let batch = Array(outdated.prefix(parallelism - inFlight))
        status.lastBatchAtMs = nowMs
        plan.statusUpdates.append(ServiceStatusChange(serviceID: service.id, version: service.version, status: status))
        if config.order == "start-first" && service.spec.mode == .replicated {
            // Only slots whose replacement has not been started yet.
            let started = Set(fresh.filter { $0.desiredState == .running }.map(\.slot))
            return ([], Set(batch.map(\.slot)).subtracting(started))
        }
        return (batch, [])
    }

    // MARK: - Helpers

    /// How long after it stopped a task of a slot is replaced: the policy's delay, doubled for every other task of
    /// the slot that failed in the last 10 minutes, at most 5 minutes (the agent's backoff, one level up).
    static func replacementDelay(
        _ task: Flotilla_V1_TaskRecord, of tasks: [Flotilla_V1_TaskRecord], policy: Flotilla_V1_RestartPolicy, nowMs: UInt64
    ) -> UInt64 {
        let since = nowMs > 600_000 ? nowMs - 600_000 : 0
        let earlier = tasks.filter { other in
            other.id != task.id && other.slot == task.slot && (task.slot != 0 || other.nodeID == task.nodeID)
                && other.state == .failed && other.stateChangedAtMs >= since
        }.count
        var delay = UInt64(max(policy.delayMs, 1))
        for _ in 0..<min(earlier, 16) where delay < 300_000 { delay *= 2 }
        return min(delay, 300_000)
    }

    /// Why a stopped task of a slot is not replaced: the restart policy's `max_attempts` within its window,
    /// counting restarts in place (each task's `restarts`) and replacements (every earlier task of the slot
    /// that ended within the window); nil when it may be.
    static func restartLimitReached(
        _ task: Flotilla_V1_TaskRecord, of tasks: [Flotilla_V1_TaskRecord], policy: Flotilla_V1_RestartPolicy, nowMs: UInt64
    ) -> String? {
        guard policy.maxAttempts > 0 else { return nil }
        let since = policy.windowMs > 0 && nowMs > UInt64(policy.windowMs) ? nowMs - UInt64(policy.windowMs) : 0
        let slot = tasks.filter { other in
            other.slot == task.slot && (task.slot != 0 || other.nodeID == task.nodeID) && isTerminal(other.state)
                && other.state != .shutdown && other.stateChangedAtMs >= since
        }
        let attempts = slot.reduce(0) { $0 + Int($1.restarts) } + max(slot.count - 1, 0)
        guard attempts >= Int(policy.maxAttempts) else { return nil }
        let window = policy.windowMs > 0 ? " within \(policy.windowMs / 1000) s" : ""
        return "restart limit reached (\(policy.maxAttempts) restarts\(window))"
    }

    static func isTerminal(_ state: Flotilla_V1_TaskState) -> Bool {
        switch state {
        case .complete, .failed, .shutdown, .orphaned: true
        default: false
        }
    }

    static func newTask(id: String, service: Flotilla_V1_ServiceRecord, slot: UInt32, nowMs: UInt64) -> Flotilla_V1_TaskRecord {
        var task = Flotilla_V1_TaskRecord()
        task.specDigest = ServiceSpecRules.taskDigest(service.spec)
        task.id = id
        task.serviceID = service.id
        task.serviceVersion = service.version
        task.slot = slot
        task.desiredState = .running
        task.state = .pending
        task.createdAtMs = nowMs
        task.stateChangedAtMs = nowMs
        return task
    }

    static func request(_ service: Flotilla_V1_ServiceRecord) -> PlacementRequest {
        let spec = service.spec
        return PlacementRequest(
            serviceID: service.id, cpuMillis: spec.resources.cpuReservationMillis, memoryBytes: spec.resources.memoryReservationBytes,
            constraints: spec.constraints.compactMap { PlacementConstraint.parse($0).constraint },
            maxPerNode: Int(spec.maxReplicasPerNode),
            spreadOverLabel: spec.spreadOver.hasPrefix("node.labels.") ? String(spec.spreadOver.dropFirst("node.labels.".count)) : nil,
            hostPorts: Set(spec.ports.filter { $0.publishMode == "host" }.map(\.publishedPort)))
    }

    /// The nodes with what their live tasks reserve.
    static func schedulingNodes(_ state: ClusterState) -> [SchedulingNode] {
        var nodes = state.nodes.map { node in
            SchedulingNode(
                id: node.id, name: node.name, labels: node.labels, isReady: node.status == .ready, availability: node.availability)
        }
        let index = Dictionary(uniqueKeysWithValues: nodes.enumerated().map { ($1.id.rawValue, $0) })
        for task in state.tasks where task.desiredState == .running && !isTerminal(task.state) {
            guard let position = index[task.nodeID], let service = state.service(task.serviceID) else { continue }
            nodes[position].reserve(request(service))
            if task.state == .failed { nodes[position].recentFailures[task.serviceID, default: 0] += 1 }
        }
        for task in state.tasks where task.state == .failed {
            guard let position = index[task.nodeID] else { continue }
            nodes[position].recentFailures[task.serviceID, default: 0] += 1
        }
        return nodes
    }

    static func release(_ task: Flotilla_V1_TaskRecord, from nodes: inout [SchedulingNode], state: ClusterState) {
        guard let position = nodes.firstIndex(where: { $0.id.rawValue == task.nodeID }), let service = state.service(task.serviceID) else { return }
        nodes[position].release(request(service))
    }

    /// Finished tasks beyond the newest `keep` of each slot (global: of each node), and every finished task of
    /// a removed service.
    static func expiredHistory(_ state: ClusterState, keep: Int, changed: [String: Flotilla_V1_TaskRecord]) -> [String] {
        let finished = state.tasks.filter { changed[$0.id] == nil && $0.desiredState == .shutdown && isTerminal($0.state) }
        var deletes: [String] = []
        let groups = Dictionary(grouping: finished) { "\($0.serviceID)/\($0.slot)/\($0.slot == 0 ? $0.nodeID : "")" }
        for (_, tasks) in groups {
            if let first = tasks.first, state.service(first.serviceID) == nil {
                deletes += tasks.map(\.id)
                continue
            }
            let ordered = tasks.sorted { ($0.stateChangedAtMs, $0.id) > ($1.stateChangedAtMs, $1.id) }
            deletes += ordered.dropFirst(keep).map(\.id)
        }
        return deletes.sorted()
    }
}

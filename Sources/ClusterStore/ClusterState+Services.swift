public import Messages
internal import ClusterModel

// MARK: - Services and tasks: ServiceCreate, ServiceUpdate, ServiceRemove, TasksWrite, TaskStatusReport

extension ClusterState {
    mutating func applyServiceCreate(_ create: Flotilla_V1_ServiceCreate, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard create.hasService else { return .invalid("a ServiceCreate command must carry a service record") }
        var service = create.service
        if let problem = Self.idProblem(service.id, kind: "service") { return .invalid(problem) }
        guard serviceTable[service.id] == nil else { return .invalid("service id \(service.id) already exists") }
        let problems = ServiceSpecRules.problems(in: service.spec)
        guard problems.isEmpty else { return .invalid(problems.map(\.description).joined(separator: "; ")) }
        if let holder = serviceNamed(service.spec.name) {
            return .invalid("a service named \(service.spec.name) already exists (id \(holder.id)); update it, or choose another name")
        }
        guard service.version == 1 else { return .invalid("a new service starts at version 1, not \(service.version)") }
        // The virtual IP is the store's to give, whatever the command carries.
        switch freeVirtualIP() {
        case .success(let address): service.virtualIp = address
        case .failure(let error): return .invalid("service \(service.spec.name) cannot be created: \(error.message)")
        }
        serviceTable[service.id] = service
        changes.append(StoreChange(table: .services, key: service.id, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyServiceUpdate(_ update: Flotilla_V1_ServiceUpdate, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard var service = serviceTable[update.id] else { return .notFound }
        if update.expectedVersion != 0 && update.expectedVersion != service.version {
            return .casFailed(currentIndex: service.version)
        }
        guard update.hasSpec else { return .invalid("a ServiceUpdate command must carry a spec") }
        let problems = ServiceSpecRules.problems(in: update.spec)
        guard problems.isEmpty else { return .invalid(problems.map(\.description).joined(separator: "; ")) }
        guard update.spec.name == service.spec.name else {
            return .invalid("a service cannot be renamed (\(service.spec.name) → \(update.spec.name)); create a new one")
        }
        if update.rollback {
            guard service.hasPreviousSpec else { return .invalid("service \(service.spec.name) has no previous spec to roll back to") }
        }
        // A service from before virtual IPs gets one now (it keeps none if the network is full).
        if service.virtualIp.isEmpty, case .success(let address) = freeVirtualIP() { service.virtualIp = address }
        service.previousSpec = service.spec
        service.spec = update.spec
        service.version += 1
        service.updatedAtMs = update.nowMs
        var status = Flotilla_V1_UpdateStatus()
        status.state = update.rollback ? "rolling-back" : "updating"
        if update.rollback {
            // Keep why: the failed update's judgement, or that an operator asked.
            status.message = service.updateStatus.state == "rollback-started" ? service.updateStatus.message : "rolled back on request"
        }
        status.startedAtMs = update.nowMs
        service.updateStatus = status
        serviceTable[service.id] = service
        changes.append(StoreChange(table: .services, key: service.id, kind: .put, index: index))
        return .ok(index: index)
    }

    /// The autoscaler's decisions kept per service.
    static let autoscaleDecisionsKept = 10

    mutating func applyServiceScale(_ scale: Flotilla_V1_ServiceScale, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard var service = serviceTable[scale.id] else { return .notFound }
        guard scale.expectedVersion == service.version else { return .casFailed(currentIndex: service.version) }
        guard service.spec.mode == .replicated else {
            return .invalid("service \(service.spec.name) is global: it runs one task per node and has no replica count to scale")
        }
        var spec = service.spec
        spec.replicas = scale.replicas
        let problems = ServiceSpecRules.problems(in: spec)
        guard problems.isEmpty else { return .invalid(problems.map(\.description).joined(separator: "; ")) }
        var decision = Flotilla_V1_AutoscaleDecisionRecord()
        decision.atMs = scale.nowMs
        decision.from = service.spec.replicas
        decision.to = scale.replicas
        decision.reason = scale.reason
        service.spec = spec
        // A rollback returns to the previous spec, not to the previous count.
        if service.hasPreviousSpec { service.previousSpec.replicas = scale.replicas }
        service.version += 1
        service.updatedAtMs = scale.nowMs
        service.autoscaleDecisions.append(decision)
        service.autoscaleDecisions.removeFirst(max(0, service.autoscaleDecisions.count - Self.autoscaleDecisionsKept))
        serviceTable[service.id] = service
        changes.append(StoreChange(table: .services, key: service.id, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyServiceStatusUpdate(_ update: Flotilla_V1_ServiceStatusUpdate, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard var service = serviceTable[update.id] else { return .notFound }
        guard update.version == service.version else { return .casFailed(currentIndex: service.version) }
        guard service.updateStatus != update.status else { return .ok(index: index) }
        service.updateStatus = update.status
        serviceTable[service.id] = service
        changes.append(StoreChange(table: .services, key: service.id, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyServiceRemove(_ remove: Flotilla_V1_ServiceRemove, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard serviceTable.removeValue(forKey: remove.id) != nil else { return .notFound }
        changes.append(StoreChange(table: .services, key: remove.id, kind: .delete, index: index))
        return .ok(index: index)
    }

    mutating func applyTasksWrite(_ write: Flotilla_V1_TasksWrite, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        // Check everything first: the plan applies whole or not at all.
        var seen: Set<String> = []
        for task in write.tasks {
            if let problem = Self.idProblem(task.id, kind: "task") { return .invalid(problem) }
            guard seen.insert(task.id).inserted else { return .invalid("the plan writes task \(task.id) twice") }
            guard task.desiredState == .running || task.desiredState == .shutdown else {
                return .invalid("task \(task.id): a desired state is running or shutdown")
            }
            if case .UNRECOGNIZED = task.state { return .invalid("task \(task.id) has a state this version does not know") }
            if !task.nodeID.isEmpty && nodeTable[NodeID(task.nodeID)] == nil && task.desiredState == .running {
                return .invalid("task \(task.id) is placed on node \(task.nodeID), which is not in the cluster")
            }
            guard let service = serviceTable[task.serviceID] else {
                // A removed service's tasks may only be wound down.
                guard task.desiredState == .shutdown, taskTable[task.id] != nil else {
                    return .invalid("stale plan: service \(task.serviceID) of task \(task.id) no longer exists")
                }
                continue
            }
            guard task.serviceVersion <= service.version else {
                return .invalid("task \(task.id) runs version \(task.serviceVersion) of service \(service.spec.name), which is only at \(service.version)")
            }
            if taskTable[task.id] == nil && task.desiredState == .running && task.serviceVersion != service.version {
                return .invalid("stale plan: a new task of \(service.spec.name) at version \(task.serviceVersion), but the service is at \(service.version)")
            }
        }
        var written: [StoreChange] = []
        for task in write.tasks where taskTable[task.id] != task {
            taskTable[task.id] = task
            written.append(StoreChange(table: .tasks, key: task.id, kind: .put, index: index))
        }
        for id in write.deleteIds where !seen.contains(id) && taskTable.removeValue(forKey: id) != nil {
            written.append(StoreChange(table: .tasks, key: id, kind: .delete, index: index))
        }
        // In task-id order, however the plan listed them: the same plan always tells watchers the same story.
        changes += written.sorted { $0.key < $1.key }
        return .ok(index: index)
    }

    mutating func applyTaskStatusReport(_ report: Flotilla_V1_TaskStatusReport, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        for status in report.statuses {
            guard var task = taskTable[status.taskID], task.nodeID == report.nodeID else { continue }
            if case .UNRECOGNIZED = status.state { continue }
            let message = String(status.message.prefix(1024))
            let address = String(status.address.prefix(64))
            let health = String(status.health.prefix(16))
            guard task.state != status.state || task.message != message || task.exitCode != status.exitCode || task.ready != status.ready
                    || task.health != health || task.restarts != status.restarts || task.address != address else { continue }
            task.state = status.state
            task.message = message
            task.exitCode = status.exitCode
            task.ready = status.ready
            task.health = health
            task.restarts = status.restarts
            task.address = address
            task.stateChangedAtMs = status.atMs
            taskTable[task.id] = task
            changes.append(StoreChange(table: .tasks, key: task.id, kind: .put, index: index))
        }
        return .ok(index: index)
    }

    /// The lowest virtual IP of the service network no service holds.
    func freeVirtualIP() -> Result<String, NetworkAddressError> {
        Result { () throws(NetworkAddressError) -> String in
            var allocator = try Self.virtualIPAllocator(holding: serviceTable.values.compactMap { IPv4Address($0.virtualIp) })
            return try allocator.allocate().description
        }
    }

    /// An allocator over the service network with `addresses` taken.
    static func virtualIPAllocator(holding addresses: some Sequence<IPv4Address>) throws(NetworkAddressError) -> VirtualIPAllocator {
        try VirtualIPAllocator(network: IPv4Subnet(parsing: serviceNetwork), allocated: addresses)
    }

    private func serviceNamed(_ name: String) -> Flotilla_V1_ServiceRecord? {
        serviceTable.values.first { $0.spec.name == name }
    }

    static func idProblem(_ id: String, kind: String) -> String? {
        let bytes = Array(id.utf8)
        guard (4...64).contains(bytes.count), bytes.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x2D }) else {
            return "\(kind) id \(quoted(id, limit: 70)) must be 4 to 64 lowercase letters, digits and '-'"
        }
        return nil
    }
}

// MARK: - Reading

extension ClusterState {
    /// The service with id `id`.
    public func service(_ id: String) -> Flotilla_V1_ServiceRecord? { serviceTable[id] }

    /// The service whose virtual IP is `address`.
    public func service(virtualIP address: String) -> Flotilla_V1_ServiceRecord? {
        serviceTable.values.first { $0.virtualIp == address }
    }

    /// The service named `name`.
    public func service(named name: String) -> Flotilla_V1_ServiceRecord? { serviceTable.values.first { $0.spec.name == name } }

    /// Every service, sorted by name.
    public var services: [Flotilla_V1_ServiceRecord] { serviceTable.values.sorted { $0.spec.name < $1.spec.name } }

    /// The task with id `id`.
    public func task(_ id: String) -> Flotilla_V1_TaskRecord? { taskTable[id] }

    /// Every task, sorted by id.
    public var tasks: [Flotilla_V1_TaskRecord] { taskTable.values.sorted { $0.id < $1.id } }

    /// The tasks of one service, sorted by slot then id.
    public func tasks(ofService id: String) -> [Flotilla_V1_TaskRecord] {
        taskTable.values.filter { $0.serviceID == id }.sorted { ($0.slot, $0.id) < ($1.slot, $1.id) }
    }
}

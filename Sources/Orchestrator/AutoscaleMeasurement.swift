public import Messages

/// What the leader measures of one autoscaled service at one moment, from the store (its count, its ready tasks)
/// and the soft state of the agents' reports (traffic, CPU, memory): the autoscaler's observation, and what
/// `flotilla service autoscale` shows. Only ready tasks are measured: traffic to a task still starting or
/// draining says nothing about what the ready ones can take.
public struct AutoscaleMeasurement: Sendable, Equatable {
    /// The count the spec asks for.
    public var replicas: UInt32
    /// Tasks that should run, run, and are ready for traffic.
    public var ready: UInt32
    /// A load balancer reports the service (false for a new leader, or a service no balancer serves yet).
    public var measured: Bool
    /// Requests per second (tcp: new connections per second) to the ready tasks, summed over nodes.
    public var requestsPerSecond: Double
    /// Connections (http: requests) in flight to the ready tasks, summed over nodes.
    public var activeConnections: Double
    /// Nodes whose balancers report the service.
    public var nodesReporting: UInt32
    /// Some ready task has two CPU reads within the window.
    public var cpuMeasured: Bool
    /// CPU per ready task as a percentage of its reservation, averaged over the ready tasks read.
    public var cpuPercent: Double
    /// Memory summed over the ready tasks read, bytes.
    public var memoryBytes: UInt64

    /// Measures `service` over the windows ending at `now` (the leader's monotonic ms); `tasks` are its tasks.
    public init(
        service: Flotilla_V1_ServiceRecord, tasks: [Flotilla_V1_TaskRecord], traffic: ServiceTraffic, usage: TaskUsageTracker,
        nowMillis now: UInt64
    ) {
        let readyTasks = tasks.filter { $0.desiredState == .running && $0.state == .running && $0.ready }.map(\.id)
        replicas = service.spec.replicas
        ready = UInt32(readyTasks.count)
        let load = traffic.load(ofService: service.id, nowMillis: now)
        measured = load != nil
        nodesReporting = UInt32(load?.nodes ?? 0)
        requestsPerSecond = readyTasks.reduce(0) { $0 + (load?.tasks[$1]?.requestsPerSecond ?? 0) }
        activeConnections = Double(readyTasks.reduce(0) { $0 + (load?.tasks[$1]?.activeConnections ?? 0) })
        let reservation = service.spec.resources.cpuReservationMillis
        let usages = readyTasks.compactMap { usage.usage(ofTask: $0, reservedCPUMillis: reservation, nowMillis: now) }
        let cpu = usages.compactMap { $0.cpuPercent }
        cpuMeasured = !cpu.isEmpty
        cpuPercent = cpu.isEmpty ? 0 : cpu.reduce(0, +) / Double(cpu.count)
        memoryBytes = usages.reduce(0) { $0 &+ $1.memoryBytes }
    }

    /// The autoscaler's input: what was not measured is nil (its target is then skipped).
    public var observation: AutoscaleObservation {
        AutoscaleObservation(
            requestsPerSecond: measured ? requestsPerSecond : nil, activeConnections: measured ? activeConnections : nil,
            cpuPercent: cpuMeasured ? cpuPercent : nil)
    }
}

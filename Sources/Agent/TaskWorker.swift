import Foundation
public import Logging
public import ContainerRuntime
public import Messages

/// The agent's worker: reconciles the leader's assignments against what runs on this node, and collects the
/// tasks' state changes for the next heartbeat. Tasks keep running whatever happens to the session (static
/// stability): only an assignment set from the leader stops them.
public actor TaskWorker: AssignmentReceiver {
    /// Host commands for health checks (and the process driver's tasks).
    private let driver = ProcessDriver()
    /// The runtimes tasks may choose, by driver name.
    private let runtimes: [String: any ContainerRuntime]
    private let logger: Logger
    private var running: [String: RuntimeHandle] = [:]
    /// Tasks known to have ended (so a late duplicate assignment does not start them again).
    private var finished: Set<String> = []
    /// Tasks being stopped whose process has exited.
    private var exitedProcesses: Set<String> = []
    private var statuses: [Flotilla_V1_TaskStatus] = []
    /// Tasks whose runtime is preparing them (pulling an image): not running yet, and not to be started twice.
    private var preparing: Set<String> = []
    /// Preparing tasks the leader no longer wants: not started when their preparation ends.
    private var abandoned: Set<String> = []
    /// The health-check loop of each running task that has a check.
    private var healthLoops: [String: Task<Void, Never>] = [:]

    /// Called before a task is stopped on purpose (not when it failed its health check or exited), with the
    /// assignment it ran: where the node's load balancer takes it out of rotation and lets its connections
    /// drain before the process gets SIGTERM.
    public typealias StopHook = @Sendable (Flotilla_V1_TaskAssignment) async -> Void
    private let beforeStop: StopHook?
    private var assignments: [String: Flotilla_V1_TaskAssignment] = [:]

    /// `runtimes`: extra drivers beside the process driver (the OCI driver, once it exists).
    public init(logger: Logger, runtimes: [any ContainerRuntime] = [], beforeStop: StopHook? = nil) {
        self.logger = logger
        self.beforeStop = beforeStop
        var byName: [String: any ContainerRuntime] = [:]
        for runtime in [driver] + runtimes { byName[runtime.name] = runtime }
        self.runtimes = byName
    }

    /// Tasks running now (tests, metrics).
    public var runningTaskIDs: [String] { running.keys.sorted() }

    /// Where the worker stands in the session's sequence of assignment updates.
    private var sequence = AssignmentSequence()
    public var generation: UInt64 { sequence.position.generation }
    public var needsResync: Bool { sequence.position.needsResync }
    public func position() -> AssignmentSequence.Position { sequence.position }

    /// Applies one assignment update from the leader: a complete set (starts what should run and does not,
    /// stops what runs and should not), or a change on top of the previous generation.
    public func apply(_ update: Flotilla_V1_SessionUpdate) async {
        let before = sequence.position
        switch sequence.accept(update) {
        case .complete(let assignments):
            await apply(complete: assignments)
        case .change(let upserts, let removed):
            for id in removed {
                await stop(id)
                finished.remove(id)  // no longer assigned: nothing will mention it again
            }
            for assignment in upserts.sorted(by: { $0.taskID < $1.taskID }) {
                if assignment.desiredState == .running {
                    if running[assignment.taskID] == nil && !finished.contains(assignment.taskID) { await start(assignment) }
                } else {
                    await stop(assignment.taskID)
                }
            }
        case .ignore:
            if sequence.position.needsResync && !before.needsResync {
                logger.warning("assignment update out of sequence; asking for the complete set", metadata: [
                    "generation": "\(before.generation)", "received": "\(update.assignmentsGeneration)"])
            }
        }
    }

    /// Applies a complete assignment set: starts what should run and does not, stops what runs and should not.
    private func apply(complete assignments: [Flotilla_V1_TaskAssignment]) async {
        let wanted = Dictionary(assignments.map { ($0.taskID, $0) }, uniquingKeysWith: { _, last in last })
        for id in running.keys where wanted[id]?.desiredState != .running {
            await stop(id)
        }
        for id in preparing where wanted[id]?.desiredState != .running { abandoned.insert(id) }
        // Tasks no longer assigned are forgotten: the set is the whole truth.
        finished = finished.filter { wanted[$0] != nil }
        for assignment in assignments.sorted(by: { $0.taskID < $1.taskID })
        where assignment.desiredState == .running && running[assignment.taskID] == nil && !finished.contains(assignment.taskID) {
            await start(assignment)
        }
    }

    /// Stops a running task on purpose and reports it shut down (or failed, with `failure`).
    private func stop(_ id: String, failure: String? = nil) async {
        if preparing.contains(id) { abandoned.insert(id) }
        guard let handle = running.removeValue(forKey: id) else { return }
        finished.insert(id)
        let assignment = assignments.removeValue(forKey: id)
        if failure == nil, let beforeStop, let assignment { await beforeStop(assignment) }
        healthLoops.removeValue(forKey: id)?.cancel()
        await runtimes[handle.runtime]?.stop(handle, grace: .seconds(5)) { await self.hasExited(id) }
        exitedProcesses.remove(id)
        if let failure {
            report(id, .failed, failure)
        } else {
            report(id, .shutdown, "stopped")
        }
    }

    /// Runs a task's health check until the task stops: reports it running at the first pass, and stops it
    /// as failed when it turns unhealthy (the orchestrator replaces it as its restart policy says).
    private func watchHealth(_ id: String, probe: HealthProbe, listening: String) async {
        let started = ContinuousClock.now
        let interval = Duration.milliseconds(Int(probe.check.intervalMs))
        var judge = HealthJudge(retries: Int(probe.check.retries), startPeriod: .milliseconds(Int(probe.check.startPeriodMs)))
        while !Task.isCancelled {
            try? await Task.sleep(for: judge.nextDelay(interval: interval))
            guard !Task.isCancelled, running[id] != nil else { return }
            let result = await probe.run(driver: driver)
            guard !Task.isCancelled, running[id] != nil else { return }
            switch judge.record(success: result.healthy, sinceStart: ContinuousClock.now - started) {
            case .healthy:
                report(id, .running, listening.isEmpty ? "healthy" : "\(listening); healthy")
                logger.info("task healthy", metadata: ["task": "\(id)"])
            case .unhealthy:
                logger.warning("task unhealthy; stopping it", metadata: ["task": "\(id)", "reason": "\(result.reason)"])
                healthLoops[id] = nil
                await stop(id, failure: "unhealthy: \(result.reason) (\(judge.consecutiveFailures) checks in a row)")
                return
            case nil:
                break
            }
        }
    }

    private func start(_ assignment: Flotilla_V1_TaskAssignment) async {
        let spec = assignment.spec
        guard let runtime = runtimes[spec.driver] else {
            let available = runtimes.keys.sorted().joined(separator: ", ")
            report(assignment.taskID, .failed, "the \(spec.driver) driver is not available on this agent (it has: \(available))")
            finished.insert(assignment.taskID)
            return
        }
        let id = assignment.taskID
        guard !preparing.contains(id) else {
            abandoned.remove(id)  // wanted again while still preparing
            return
        }
        // A host-mode port is bound on this node as published; otherwise the load balancer reaches a free one.
        let port: Int? = spec.ports.first.flatMap { $0.publishMode == "host" ? Int($0.publishedPort) : ProcessDriver.freePort() }
        let environment = Dictionary(spec.env.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
        do {
            let launch = TaskLaunch(taskID: id, serviceName: assignment.serviceName, spec: spec, environment: environment, port: port)
            // May take long (an image pull); other updates are applied meanwhile.
            preparing.insert(id)
            defer { preparing.remove(id) }
            try await runtime.prepare(launch)
            if abandoned.remove(id) != nil {
                finished.insert(id)
                report(id, .shutdown, "stopped before it started")
                return
            }
            let handle = try runtime.start(launch) { exit in
                Task { await self.exited(id, exit) }
            }
            running[id] = handle
            assignments[id] = assignment
            let listening = port.map { "listening on port \($0)" } ?? ""
            if spec.hasHealthCheck {
                // Running, but not ready: the task counts as running once its check first passes.
                report(id, .starting, listening.isEmpty ? "waiting for the health check" : "\(listening); waiting for the health check")
                let probe = HealthProbe(check: spec.healthCheck, taskID: id, port: port, environment: environment)
                healthLoops[id] = Task { await self.watchHealth(id, probe: probe, listening: listening) }
            } else {
                report(id, .running, listening)
            }
            logger.info("task started", metadata: ["task": "\(id)", "service": "\(assignment.serviceName)", "pid": "\(handle.pid)"])
        } catch {
            finished.insert(id)
            report(id, .failed, "could not start: \(error)")
        }
    }

    private func hasExited(_ id: String) -> Bool { exitedProcesses.contains(id) }

    private func exited(_ id: String, _ exit: TaskExit) {
        guard running.removeValue(forKey: id) != nil else {
            exitedProcesses.insert(id)  // stopped on purpose: the stop waits for this, and reports it
            return
        }
        healthLoops.removeValue(forKey: id)?.cancel()
        let memoryLimit = assignments.removeValue(forKey: id)?.spec.resources.memoryLimitBytes ?? 0
        finished.insert(id)
        if exit.oomKilled {
            let limit = memoryLimit > 0 ? " (limit \(memoryLimit >> 20) MiB)" : ""
            report(id, .failed, "killed: out of memory\(limit); exit status \(exit.status)", exitCode: exit.status)
        } else if exit.status == 0 {
            report(id, .complete, "exited with status 0")
        } else {
            report(id, .failed, "exited with status \(exit.status)", exitCode: exit.status)
        }
        logger.info("task exited", metadata: ["task": "\(id)", "status": "\(exit.status)", "oom": "\(exit.oomKilled)"])
    }

    private func report(_ id: String, _ state: Flotilla_V1_TaskState, _ message: String, exitCode: Int32 = 0) {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = id
        status.state = state
        status.message = message
        status.exitCode = exitCode
        status.atMs = UInt64(Date().timeIntervalSince1970 * 1000)
        statuses.removeAll { $0.taskID == id }
        statuses.append(status)
    }

    /// The state changes since the last call, for a heartbeat. Put back with `requeue` if it was not sent.
    public func takeStatuses() -> [Flotilla_V1_TaskStatus] {
        defer { statuses = [] }
        return statuses
    }

    public func requeue(_ unsent: [Flotilla_V1_TaskStatus]) {
        for status in unsent where !statuses.contains(where: { $0.taskID == status.taskID }) { statuses.insert(status, at: 0) }
    }

    /// Stops every task (agent shutdown).
    public func stopAll() async {
        for id in running.keys { await stop(id) }
    }
}

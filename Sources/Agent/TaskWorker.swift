public import CoreMetrics
import Foundation
public import Logging
public import ContainerRuntime
public import Messages

/// The agent's worker: reconciles the leader's assignments against what runs on this node, supervises what it
/// started (restarts in place with backoff, liveness and readiness checks), and collects the tasks' state
/// changes for the next heartbeat. Tasks keep running whatever happens to the session (static stability): only
/// an assignment set from the leader stops them.
public actor TaskWorker: AssignmentReceiver {
    /// Supervision timings (tests shorten them).
    public struct Settings: Sendable {
        /// The longest wait between restarts in place.
        public var restartCap = RestartBackoff.cap
        /// A task that ran this long before it stopped starts its backoff over.
        public var restartResetAfter = RestartBackoff.resetAfter
        /// SIGTERM → SIGKILL when the spec gives no stop grace period.
        public var stopGrace = Duration.seconds(10)
        public init() {}
    }

    /// Called before a task is stopped on purpose (not when it failed its health check or exited), with the
    /// assignment it ran: where the node's load balancer takes it out of rotation and lets its connections
    /// drain before the process gets SIGTERM.
    public typealias StopHook = @Sendable (Flotilla_V1_TaskAssignment) async -> Void
    /// Called with a session update that carries the node's network (subnet, routes), before its assignments
    /// are applied: where the node's container network is set up.
    public typealias NetworkHook = @Sendable (Flotilla_V1_SessionUpdate) async -> Void

    /// One assigned task, from its first start until it is stopped on purpose or given up.
    private struct Supervised {
        let assignment: Flotilla_V1_TaskAssignment
        let launch: TaskLaunch
        let runtime: any ContainerRuntime
        var backoff: RestartBackoff
        /// Counts starts: an exit or a check of an earlier run is ignored.
        var run = 0
        /// The running process; nil while it starts or waits to restart.
        var handle: RuntimeHandle?
        var startedAt = ContinuousClock.now
        /// Being stopped on purpose.
        var stopping = false
        /// Its runtime is starting it (the start finishes, and undoes itself if it was stopped meanwhile).
        var launching = false
        /// Why it is being stopped as a failure (its liveness check).
        var unhealthy: String?
        /// Health checks, or the wait before a restart.
        var loops: [Task<Void, Never>] = []
        /// Liveness: nil without a check, else whether it passes (false until the first pass).
        var healthy: Bool?
        /// Readiness: nil without a check, else whether it passes.
        var readyCheck: Bool?
        var state = Flotilla_V1_TaskState.starting
        var message = "starting"
        var exitCode: Int32 = 0
        var restarts: UInt32 = 0

        var ready: Bool { handle != nil && state == .running && healthy != false && readyCheck != false }
        var health: String {
            guard let healthy else { return "" }
            return healthy ? "healthy" : (state == .running || unhealthy != nil ? "unhealthy" : "starting")
        }
        /// Where its first port is reached: its own address, or the host's loopback when it shares its network.
        var host: String { handle?.address ?? "127.0.0.1" }
        var address: String { launch.port.map { "\(host):\($0)" } ?? "" }
        var grace: Duration? {
            assignment.spec.stopGracePeriodMs > 0 ? .milliseconds(Int(assignment.spec.stopGracePeriodMs)) : nil
        }
    }

    /// The runtimes tasks may choose, by driver name.
    private let runtimes: [String: any ContainerRuntime]
    private let logger: Logger
    private let settings: Settings
    private let beforeStop: StopHook?
    private let onNetwork: NetworkHook?
    /// Where tasks' stdout and stderr are captured (nil: discarded).
    private let logs: TaskLogs?
    /// The clock restart windows count on.
    private let origin = ContinuousClock.now
    private var tasks: [String: Supervised] = [:]
    /// Tasks known to have ended (so a late duplicate assignment does not start them again).
    private var finished: Set<String> = []
    private var statuses: [Flotilla_V1_TaskStatus] = []
    /// Container (and process) starts, first ones and restarts in place alike; restarts in place alone.
    private let startCounter: Counter
    private let restartCounter: Counter

    /// `runtimes`: drivers beside the process driver (the OCI driver). `logs`: where tasks' output is captured;
    /// a task's logs are released when the node forgets it. `metrics`: where starts and restarts are counted
    /// (the process's Prometheus registry); none by default.
    public init(
        logger: Logger, runtimes: [any ContainerRuntime] = [], settings: Settings = Settings(), onNetwork: NetworkHook? = nil,
        beforeStop: StopHook? = nil, logs: TaskLogs? = nil, metrics: any MetricsFactory = NOOPMetricsHandler.instance
    ) {
        self.logger = logger
        startCounter = Counter(label: "flotilla_container_starts_total", factory: metrics)
        restartCounter = Counter(label: "flotilla_container_restarts_total", factory: metrics)
        self.onNetwork = onNetwork
        self.settings = settings
        self.beforeStop = beforeStop
        self.logs = logs
        var byName: [String: any ContainerRuntime] = [:]
        // A process driver among `runtimes` (one with cgroups) replaces the plain default.
        for runtime in [ProcessDriver()] + runtimes { byName[runtime.name] = runtime }
        self.runtimes = byName
    }

    /// Tasks this worker supervises now (started, starting or waiting to restart), for tests and metrics.
    public var runningTaskIDs: [String] { tasks.filter { !$0.value.stopping }.keys.sorted() }

    /// The images its runtimes keep on this node.
    public func images() -> [Flotilla_V1_NodeImage] {
        runtimes.values.sorted { $0.name < $1.name }.flatMap { $0.images() }
    }

    /// Each running task's handle and runtime, for reading its usage outside the actor.
    private func runningHandles() -> [(taskID: String, handle: RuntimeHandle, runtime: any ContainerRuntime)] {
        tasks.compactMap { id, entry in
            guard let handle = entry.handle, entry.state == .running, !entry.stopping else { return nil }
            return (id, handle, entry.runtime)
        }
    }

    /// CPU and memory of every running task its runtime can read, stamped with the time of each read. The
    /// cgroup files are read off the actor, so starts and stops do not wait for them.
    public nonisolated func taskUsage() async -> [Flotilla_V1_TaskUsage] {
        await runningHandles().compactMap { running in
            guard let stats = running.runtime.stats(running.handle) else { return nil }
            var usage = Flotilla_V1_TaskUsage()
            usage.taskID = running.taskID
            usage.cpuUsageUsec = stats.cpuNanoseconds / 1_000
            usage.memoryBytes = stats.memoryBytes
            usage.takenMs = UInt64(Date().timeIntervalSince1970 * 1000)
            return usage
        }.sorted { $0.taskID < $1.taskID }
    }

    /// Tasks it holds in any state, those being stopped included (tests).
    var supervisedCount: Int { tasks.count }

    /// Where the worker stands in the session's sequence of assignment updates.
    private var sequence = AssignmentSequence()
    public var generation: UInt64 { sequence.position.generation }
    public var needsResync: Bool { sequence.position.needsResync }
    public func position() -> AssignmentSequence.Position { sequence.position }

    /// Applies one assignment update from the leader: a complete set (starts what should run and does not,
    /// stops what runs and should not), or a change on top of the previous generation. Starting happens in the
    /// background (an image may have to be pulled); stopping is done when this returns.
    public func apply(_ update: Flotilla_V1_SessionUpdate) async {
        if update.networkChanged, let onNetwork { await onNetwork(update) }
        let before = sequence.position
        switch sequence.accept(update) {
        case .complete(let assignments):
            await apply(complete: assignments)
        case .change(let upserts, let removed):
            let sorted = upserts.sorted(by: { $0.taskID < $1.taskID })
            await stopTogether(removed + sorted.filter { $0.desiredState != .running }.map(\.taskID))
            for id in removed {
                finished.remove(id)  // no longer assigned: nothing will mention it again
                await logs?.release(id)
            }
            for assignment in sorted where assignment.desiredState == .running {
                if tasks[assignment.taskID] == nil && !finished.contains(assignment.taskID) { begin(assignment) }
            }
        case .ignore:
            if sequence.position.needsResync && !before.needsResync {
                logger.warning("assignment update out of sequence; asking for the complete set", metadata: [
                    "generation": "\(before.generation)", "received": "\(update.assignmentsGeneration)"])
            }
        }
    }

    private func apply(complete assignments: [Flotilla_V1_TaskAssignment]) async {
        let wanted = Dictionary(assignments.map { ($0.taskID, $0) }, uniquingKeysWith: { _, last in last })
        await stopTogether(tasks.keys.filter { wanted[$0]?.desiredState != .running })
        // Tasks no longer assigned are forgotten: the set is the whole truth.
        let forgotten = finished.filter { wanted[$0] == nil }
        finished.subtract(forgotten)
        for id in forgotten.sorted() { await logs?.release(id) }
        for assignment in assignments.sorted(by: { $0.taskID < $1.taskID })
        where assignment.desiredState == .running && tasks[assignment.taskID] == nil && !finished.contains(assignment.taskID) {
            begin(assignment)
        }
        // What an earlier agent process left running and no one assigns any more goes.
        let assigned = Set(wanted.values.filter { $0.desiredState == .running }.map(\.taskID))
        for runtime in runtimes.values { await runtime.removeUnassigned(keeping: assigned) }
    }

    // MARK: - Starting

    /// Takes on a newly assigned task and starts it in the background.
    private func begin(_ assignment: Flotilla_V1_TaskAssignment) {
        let id = assignment.taskID
        let spec = assignment.spec
        guard let runtime = runtimes[spec.driver] else {
            let available = runtimes.keys.sorted().joined(separator: ", ")
            finished.insert(id)
            report(id, .failed, "the \(spec.driver) driver is not available on this agent (it has: \(available))")
            return
        }
        // A task on its own network listens on its target port at its own address; on the host's network a
        // host-mode port is bound as published, otherwise on a free port the load balancer reaches. Kept across
        // restarts, so the task's address does not change.
        let ownNetwork = spec.driver == "oci" && spec.network != "host"
        let port: Int? = spec.ports.first.flatMap { mapping in
            if ownNetwork { return Int(mapping.targetPort) }
            return mapping.publishMode == "host" ? Int(mapping.publishedPort) : ProcessDriver.freePort()
        }
        var environment = Dictionary(spec.env.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
        // Where it runs, as the leader named the node (the drivers add FLOTILLA_TASK_ID and PORT).
        if !assignment.nodeID.isEmpty { environment["FLOTILLA_NODE_ID"] = assignment.nodeID }
        if !assignment.nodeName.isEmpty { environment["FLOTILLA_NODE"] = assignment.nodeName }
        let launch = TaskLaunch(taskID: id, serviceName: assignment.serviceName, spec: spec, environment: environment, port: port)
        let backoff = RestartBackoff(spec.restartPolicy, cap: settings.restartCap, resetAfter: settings.restartResetAfter)
        tasks[id] = Supervised(assignment: assignment, launch: launch, runtime: runtime, backoff: backoff)
        report(id)
        let run = 0
        Task { await self.launch(id, run: run) }
    }

    /// Starts run `run` of the task (its first start, or a restart), unless it was stopped meanwhile.
    private func launch(_ id: String, run: Int) async {
        guard var entry = tasks[id], entry.run == run, !entry.stopping else { return }
        entry.launching = true
        tasks[id] = entry
        let launch = await capturingOutput(entry.launch)
        let handle: RuntimeHandle
        do {
            // The image first (a pull may take a while; other tasks start and stop meanwhile).
            try await entry.runtime.prepare(entry.launch)
            guard tasks[id]?.run == run, tasks[id]?.stopping == false else {
                if tasks[id]?.run == run { tasks[id] = nil }
                return
            }
            handle = try await entry.runtime.start(launch) { exit in
                Task { await self.exited(id, run: run, exit) }
            }
        } catch {
            guard let current = tasks[id], current.run == run else { return }
            tasks[id] = nil
            finished.insert(id)
            if !current.stopping { report(id, .failed, "could not start: \(error)") }
            logger.warning("task could not start", metadata: ["task": "\(id)", "error": "\(error)"])
            return
        }
        // Counted before anything else can happen to it (its exit may already be queued); a container the
        // previous agent process left running was adopted, not started.
        if !handle.adopted { startCounter.increment() }
        guard var current = tasks[id], current.run == run else { return }
        current.launching = false
        current.handle = handle
        if current.stopping {
            // Stopped while it was starting: stop what just started (the stop already reported it).
            tasks[id] = current
            await current.runtime.stop(handle, grace: current.grace ?? settings.stopGrace) { await self.hasExited(id, run: run) }
            if tasks[id]?.run == run { tasks[id] = nil }
            return
        }
        current.startedAt = .now
        let spec = current.assignment.spec
        let listening = (current.launch.port.map { "listening on port \($0)" } ?? "")
            + (handle.adopted ? (current.launch.port == nil ? "" : "; ") + "re-adopted after an agent restart" : "")
        if spec.hasHealthCheck {
            // Running, but not ready: the task counts as running once its check first passes.
            current.healthy = false
            current.state = .starting
            current.message = listening.isEmpty ? "waiting for the health check" : "\(listening); waiting for the health check"
            current.loops.append(Task { await self.watch(id, run: run, check: spec.healthCheck, liveness: true) })
        } else {
            current.state = .running
            current.message = listening
        }
        if spec.hasReadinessCheck {
            current.readyCheck = false
            current.loops.append(Task { await self.watch(id, run: run, check: spec.readinessCheck, liveness: false) })
        }
        tasks[id] = current
        report(id)
        logger.info("task started", metadata: ["task": "\(id)", "service": "\(current.assignment.serviceName)", "pid": "\(handle.pid)",
                                               "restarts": "\(current.restarts)"])
    }

    /// The launch with the task's output going to its log FIFOs; without them (output discarded) when capture
    /// could not start, which the task survives.
    private func capturingOutput(_ launch: TaskLaunch) async -> TaskLaunch {
        guard let logs else { return launch }
        do {
            let output = try await logs.capture(launch.taskID)
            return TaskLaunch(
                taskID: launch.taskID, serviceName: launch.serviceName, spec: launch.spec, environment: launch.environment,
                port: launch.port, output: output)
        } catch {
            logger.warning("task output not captured", metadata: ["task": "\(launch.taskID)", "error": "\(error)"])
            return launch
        }
    }

    // MARK: - Checks

    /// Runs a check until the run ends. Liveness: the task is running from its first pass, and is restarted
    /// (as a failure) when it turns unhealthy. Readiness: only decides whether the task is ready for traffic.
    private func watch(_ id: String, run: Int, check: Flotilla_V1_HealthCheck, liveness: Bool) async {
        guard let entry = tasks[id], let handle = entry.handle else { return }
        let probe = HealthProbe(check: check, host: entry.host, port: entry.launch.port)
        let runtime = entry.runtime
        let launch = entry.launch
        let exec: HealthProbe.Exec = { command, timeout in try await runtime.exec(handle, launch: launch, command: command, timeout: timeout) }
        let interval = Duration.milliseconds(Int(max(check.intervalMs, 10)))
        var judge = HealthJudge(retries: Int(check.retries), startPeriod: .milliseconds(Int(check.startPeriodMs)))
        while !Task.isCancelled {
            try? await Task.sleep(for: judge.nextDelay(interval: interval))
            guard !Task.isCancelled, tasks[id]?.run == run, tasks[id]?.handle != nil else { return }
            let result = await probe.run(exec: exec)
            guard !Task.isCancelled, var current = tasks[id], current.run == run, let handle = current.handle, !current.stopping else { return }
            guard let verdict = judge.record(success: result.healthy, sinceStart: ContinuousClock.now - current.startedAt) else { continue }
            let listening = current.launch.port.map { "listening on port \($0); " } ?? ""
            switch (liveness, verdict) {
            case (true, .healthy):
                current.healthy = true
                current.state = .running
                current.message = listening + "healthy"
                logger.info("task healthy", metadata: ["task": "\(id)"])
            case (true, .unhealthy):
                let reason = "\(result.reason) (\(judge.consecutiveFailures) checks in a row)"
                logger.warning("task unhealthy; restarting it", metadata: ["task": "\(id)", "reason": "\(reason)"])
                current.healthy = false
                current.unhealthy = reason
                tasks[id] = current
                // Stopped as a failure: its exit goes through the restart policy like a crash.
                let grace = current.grace ?? settings.stopGrace
                let runtime = current.runtime
                Task { await runtime.stop(handle, grace: grace) { await self.hasExited(id, run: run) } }
                return
            case (false, .healthy):
                current.readyCheck = true
                current.message = listening + (current.healthy == false ? "waiting for the health check" : "ready")
            case (false, .unhealthy):
                current.readyCheck = false
                current.message = listening + "not ready: \(result.reason)"
                logger.info("task not ready", metadata: ["task": "\(id)", "reason": "\(result.reason)"])
            }
            tasks[id] = current
            report(id)
        }
    }

    // MARK: - Exits and restarts

    private func hasExited(_ id: String, run: Int) -> Bool {
        guard let entry = tasks[id] else { return true }
        return entry.run != run || entry.handle == nil
    }

    /// The task's process ended. Stopped on purpose: the stop reports it. Otherwise the restart policy decides:
    /// restart in place after a backoff, or report how it ended.
    private func exited(_ id: String, run: Int, _ exit: TaskExit) {
        guard var entry = tasks[id], entry.run == run else { return }
        entry.handle = nil
        entry.loops.forEach { $0.cancel() }
        entry.loops = []
        if entry.stopping {
            tasks[id] = entry
            return
        }
        let memoryLimit = entry.assignment.spec.resources.memoryLimitBytes
        let how: String
        if let unhealthy = entry.unhealthy {
            how = "unhealthy: \(unhealthy)"
        } else if exit.statusUnknown {
            how = "exited; its exit status is unknown (the agent restarted while it ran)"
        } else if exit.oomKilled {
            how = "killed: out of memory\(memoryLimit > 0 ? " (limit \(memoryLimit >> 20) MiB)" : ""); exit status \(exit.status)"
        } else {
            how = "exited with status \(exit.status)"
        }
        let failed = entry.unhealthy != nil || exit.oomKilled || exit.status != 0
        entry.unhealthy = nil
        logger.info("task exited", metadata: ["task": "\(id)", "status": "\(exit.status)", "oom": "\(exit.oomKilled)"])
        let now = ContinuousClock.now
        switch entry.backoff.stopped(failed: failed, ranFor: now - entry.startedAt, now: now - origin) {
        case .done:
            tasks[id] = nil
            finished.insert(id)
            report(id, failed ? .failed : .complete, how, exitCode: exit.status)
        case .giveUp(let reason):
            tasks[id] = nil
            finished.insert(id)
            report(id, .failed, "\(how); \(reason)", exitCode: exit.status, restarts: entry.restarts)
            logger.warning("task given back to the orchestrator", metadata: ["task": "\(id)", "reason": "\(reason)"])
        case .restart(let after, let count):
            restartCounter.increment()
            entry.run += 1
            entry.restarts = UInt32(count)
            entry.state = .starting
            entry.message = "\(how); restarting in \(RestartBackoff.text(after)) (restart \(count))"
            entry.exitCode = exit.status
            entry.healthy = entry.healthy.map { _ in false }
            entry.readyCheck = entry.readyCheck.map { _ in false }
            let next = entry.run
            entry.loops = [Task {
                try? await Task.sleep(for: after)
                await self.launch(id, run: next)
            }]
            tasks[id] = entry
            report(id)
        }
    }

    // MARK: - Stopping

    /// Stops a task on purpose and reports it shut down; done when its process has exited (or, while it is
    /// still starting, once the start has finished and been undone).
    private func stop(_ id: String) async {
        guard var entry = tasks[id], !entry.stopping else { return }
        finished.insert(id)
        entry.stopping = true
        entry.loops.forEach { $0.cancel() }
        entry.loops = []
        tasks[id] = entry
        if let handle = entry.handle {
            if let beforeStop { await beforeStop(entry.assignment) }
            let run = entry.run
            await entry.runtime.stop(handle, grace: entry.grace ?? settings.stopGrace) { await self.hasExited(id, run: run) }
            if tasks[id]?.run == run { tasks[id] = nil }
        } else if !entry.launching {
            tasks[id] = nil  // waiting to restart: nothing runs
        }
        report(id, .shutdown, "stopped")
    }

    /// Stops tasks at the same time, so their drains overlap (a scale-down by three waits one drain timeout, not
    /// three); done when all have stopped.
    private func stopTogether(_ ids: [String]) async {
        guard ids.count > 1 else {
            if let id = ids.first { await stop(id) }
            return
        }
        await withTaskGroup(of: Void.self) { group in
            for id in ids { group.addTask { await self.stop(id) } }
        }
    }

    /// Stops every task (agent shutdown).
    public func stopAll() async {
        await stopTogether(tasks.keys.sorted())
    }

    /// Agent shutdown that leaves the tasks of `keeping` runtimes running, for the next agent process to adopt
    /// (containers outlive their agent); the others stop.
    public func release(keepingRuntimes keeping: Set<String>) async {
        for id in tasks.keys.sorted() {
            guard let entry = tasks[id] else { continue }
            if keeping.contains(entry.runtime.name) && entry.handle != nil {
                entry.loops.forEach { $0.cancel() }
                tasks[id] = nil
            } else {
                await stop(id)
            }
        }
    }

    // MARK: - Reporting

    /// Reports a supervised task's current state.
    private func report(_ id: String) {
        guard let entry = tasks[id] else { return }
        var status = Self.status(id, entry.state, entry.message, exitCode: entry.exitCode, restarts: entry.restarts)
        status.ready = entry.ready
        status.health = entry.health
        status.address = entry.handle == nil ? "" : entry.address
        enqueue(status)
    }

    /// Reports a final state (the task is no longer supervised).
    private func report(_ id: String, _ state: Flotilla_V1_TaskState, _ message: String, exitCode: Int32 = 0, restarts: UInt32 = 0) {
        enqueue(Self.status(id, state, message, exitCode: exitCode, restarts: restarts))
    }

    private static func status(_ id: String, _ state: Flotilla_V1_TaskState, _ message: String, exitCode: Int32, restarts: UInt32) -> Flotilla_V1_TaskStatus {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = id
        status.state = state
        status.message = message
        status.exitCode = exitCode
        status.restarts = restarts
        status.atMs = UInt64(Date().timeIntervalSince1970 * 1000)
        return status
    }

    private func enqueue(_ status: Flotilla_V1_TaskStatus) {
        statuses.removeAll { $0.taskID == status.taskID }
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
}

import Foundation
public import Logging
public import Messages

/// The agent's worker: reconciles the leader's assignments against what runs on this node, and collects the
/// tasks' state changes for the next heartbeat. Tasks keep running whatever happens to the session (static
/// stability): only an assignment set from the leader stops them.
public actor TaskWorker {
    private let driver = ProcessDriver()
    private let logger: Logger
    private var running: [String: ProcessDriver.Handle] = [:]
    /// Tasks known to have ended (so a late duplicate assignment does not start them again).
    private var finished: Set<String> = []
    /// Tasks whose process has exited (stopped on purpose or not).
    private var exitedProcesses: Set<String> = []
    private var statuses: [Flotilla_V1_TaskStatus] = []
    /// The last assignment generation applied.
    public private(set) var generation: UInt64 = 0

    public init(logger: Logger) {
        self.logger = logger
    }

    /// Tasks running now (tests, metrics).
    public var runningTaskIDs: [String] { running.keys.sorted() }

    /// Applies a complete assignment set: starts what should run and does not, stops what runs and should not.
    public func apply(_ assignments: [Flotilla_V1_TaskAssignment], generation: UInt64) async {
        self.generation = generation
        let wanted = Dictionary(assignments.map { ($0.taskID, $0) }, uniquingKeysWith: { _, last in last })
        for (id, handle) in running where wanted[id]?.desiredState != .running {
            running[id] = nil
            finished.insert(id)
            await driver.stop(handle, grace: .seconds(5)) { await self.hasExited(id) }
            report(id, .shutdown, "stopped")
        }
        for assignment in assignments.sorted(by: { $0.taskID < $1.taskID })
        where assignment.desiredState == .running && running[assignment.taskID] == nil && !finished.contains(assignment.taskID) {
            start(assignment)
        }
    }

    private func start(_ assignment: Flotilla_V1_TaskAssignment) {
        let spec = assignment.spec
        guard spec.driver == "process" else {
            report(assignment.taskID, .failed, "the \(spec.driver) driver is not available on this agent yet; use --driver process")
            finished.insert(assignment.taskID)
            return
        }
        let id = assignment.taskID
        let port = spec.ports.isEmpty ? nil : ProcessDriver.freePort()
        let environment = Dictionary(spec.env.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
        do {
            let handle = try driver.start(taskID: id, command: spec.command, args: spec.args, environment: environment, port: port) { status in
                Task { await self.exited(id, status: status) }
            }
            running[id] = handle
            report(id, .running, port.map { "listening on port \($0)" } ?? "")
            logger.info("task started", metadata: ["task": "\(id)", "service": "\(assignment.serviceName)", "pid": "\(handle.pid)"])
        } catch {
            finished.insert(id)
            report(id, .failed, "could not start: \(error)")
        }
    }

    private func hasExited(_ id: String) -> Bool { exitedProcesses.contains(id) }

    private func exited(_ id: String, status: Int32) {
        exitedProcesses.insert(id)
        guard running.removeValue(forKey: id) != nil else { return }  // stopped on purpose: reported by the stop
        finished.insert(id)
        var message = "exited with status \(status)"
        if status == 0 {
            report(id, .complete, message)
        } else {
            message = "exited with status \(status)"
            report(id, .failed, message, exitCode: status)
        }
        logger.info("task exited", metadata: ["task": "\(id)", "status": "\(status)"])
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
        for (id, handle) in running {
            running[id] = nil
            await driver.stop(handle, grace: .seconds(5)) { await self.hasExited(id) }
        }
    }
}

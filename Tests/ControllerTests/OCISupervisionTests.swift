import Agent
import ContainerRuntime
import Foundation
import Logging
import Messages
import TestSupport
import Testing

/// The worker's supervision of real containers, under crun and under runc: a crashing container restarted in
/// place with a growing wait and then given back, a liveness check run inside the container restarting it, a
/// readiness check toggling its readiness without a restart. Needs root, busybox-static, catatonit and the
/// runtimes; CI has them.
@Suite("Supervision of real containers under crun and runc", .serialized)
struct OCISupervisionTests {
    static func assignment(_ id: String, image: String, command: String) -> Flotilla_V1_TaskAssignment {
        var assignment = Flotilla_V1_TaskAssignment()
        assignment.taskID = id
        assignment.serviceID = "svc"
        assignment.serviceName = "svc"
        assignment.desiredState = .running
        assignment.spec.driver = "oci"
        assignment.spec.image = image
        assignment.spec.command = command
        assignment.spec.network = "host"
        assignment.spec.restartPolicy.condition = "any"
        assignment.spec.restartPolicy.delayMs = 100
        return assignment
    }

    static func check(_ command: String) -> Flotilla_V1_HealthCheck {
        var check = Flotilla_V1_HealthCheck()
        check.command = ["/bin/sh", "-c", command]
        check.intervalMs = 200
        check.timeoutMs = 150
        check.retries = 2
        return check
    }

    /// Every status reported for each task, in order.
    final class History: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: [String: [Flotilla_V1_TaskStatus]] = [:]
        func collect(_ worker: TaskWorker) async {
            let statuses = await worker.takeStatuses()
            lock.withLock { for status in statuses { seen[status.taskID, default: []].append(status) } }
        }
        subscript(_ id: String) -> [Flotilla_V1_TaskStatus] { lock.withLock { seen[id] ?? [] } }
    }

    @Test("restart backoff, liveness restart and readiness toggling with real containers", .enabled(if: OCIServiceTests.available))
    func supervision() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-oci-supervision")
        try OCIServiceTests.makeBusyboxLayout(work.path + "/image")
        let image = "oci:\(work.path)/image:1.0"
        defer { OCIServiceTests.removeCgroupParents() }
        for runtime in ["crun", "runc"] where OCIRuntimeChoice.which(runtime) != nil {
            let driver = try OCIRuntimeSetup.make(
                preferred: runtime, dataDirectory: work.path + "/" + runtime, nodeID: "sup-\(runtime)", runDirectory: work.path + "/run").get()
            let worker = TaskWorker(logger: Logger(label: runtime), runtimes: [driver])
            let history = History()
            var live = Self.assignment("live-\(runtime)", image: image, command: "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 300")
            live.spec.healthCheck = Self.check("test -f /tmp/alive")
            var ready = Self.assignment(
                "ready-\(runtime)", image: image, command: "while :; do touch /tmp/ready; sleep 1; rm /tmp/ready; sleep 1; done")
            ready.spec.readinessCheck = Self.check("test -f /tmp/ready")
            var update = Flotilla_V1_SessionUpdate()
            update.assignmentsComplete = true
            update.assignmentsGeneration = 1
            update.assignments = [Self.assignment("crash-\(runtime)", image: image, command: "exit 3"), live, ready]
            await worker.apply(update)
            let done = try await eventually(timeout: .seconds(60), interval: .milliseconds(10)) {
                await history.collect(worker)
                let crashed = history["crash-\(runtime)"].last?.state == .failed
                let restartedLive = history["live-\(runtime)"].contains { $0.restarts >= 1 && $0.message.hasPrefix("unhealthy: ") }
                let readiness = Set(history["ready-\(runtime)"].filter { $0.state == .running }.map(\.ready))
                return crashed && restartedLive && readiness == [true, false]
            }
            let crash = history["crash-\(runtime)"]
            #expect(done, "\(runtime): crash \(crash.map(\.message)); live \(history["live-\(runtime)"].map(\.message)); ready \(history["ready-\(runtime)"].map { "\($0.ready)" })")
            // The waits between restarts grew: 100 ms, 200 ms, 400 ms, …; then the task was given back.
            let waits = crash.compactMap { status in status.message.range(of: #"restarting in \d+ms"#, options: .regularExpression).map { String(status.message[$0]) } }
            #expect(Array(waits.prefix(3)) == ["restarting in 100ms", "restarting in 200ms", "restarting in 400ms"], "\(runtime): \(waits)")
            #expect(crash.last?.message == "exited with status 3; failed 6 times in a row on this node", "\(runtime)")
            #expect(history["ready-\(runtime)"].allSatisfy { $0.restarts == 0 }, "\(runtime): readiness never restarts")
            await worker.stopAll()
        }
    }
}

@testable import Agent
import ContainerRuntime
import CoreMetrics
import Foundation
import Logging
import Messages
import Prometheus
import TestSupport
import Testing

/// The agent's worker against real host processes: assignment updates (complete sets, changes, resync) and
/// health checks. Needs /bin/sh, sleep and python3 (an HTTP server for the HTTP check).
@Suite("Agent: task worker", .serialized)
struct TaskWorkerTests {
    /// A task of `driver` (process by default); by default not restarted in place when it stops (restart
    /// condition "none").
    static func assignment(_ id: String, driver: String = "process", command: String = "exec sleep 60", desired: Flotilla_V1_TaskState = .running,
                           health: Flotilla_V1_HealthCheck? = nil, readiness: Flotilla_V1_HealthCheck? = nil, port: Bool = false,
                           restart: String = "none", restartDelayMs: UInt32 = 100) -> Flotilla_V1_TaskAssignment {
        var assignment = Flotilla_V1_TaskAssignment()
        assignment.spec.restartPolicy.condition = restart
        assignment.spec.restartPolicy.delayMs = restartDelayMs
        if let readiness { assignment.spec.readinessCheck = readiness }
        assignment.taskID = id
        assignment.serviceID = "svc"
        assignment.serviceName = "svc"
        assignment.desiredState = desired
        assignment.spec.driver = driver
        assignment.spec.command = command
        if port {
            var mapping = Flotilla_V1_PortSpec()
            mapping.targetPort = 8080
            mapping.protocol = "http"
            assignment.spec.ports = [mapping]
        }
        if let health { assignment.spec.healthCheck = health }
        return assignment
    }

    static func update(complete: Bool, generation: UInt64, _ assignments: [Flotilla_V1_TaskAssignment], removed: [String] = []) -> Flotilla_V1_SessionUpdate {
        var update = Flotilla_V1_SessionUpdate()
        update.assignmentsComplete = complete
        update.assignmentsGeneration = generation
        update.assignments = assignments
        update.removedTaskIds = removed
        return update
    }

    /// The last state reported for each task so far.
    final class Reports: @unchecked Sendable {
        private let lock = NSLock()
        private var latest: [String: Flotilla_V1_TaskStatus] = [:]
        func collect(_ worker: TaskWorker) async {
            let statuses = await worker.takeStatuses()
            lock.withLock { for status in statuses { latest[status.taskID] = status } }
        }
        subscript(_ id: String) -> Flotilla_V1_TaskStatus? { lock.withLock { latest[id] } }

        /// Task ids in the order something saw them.
        final class Names: @unchecked Sendable {
            private let lock = NSLock()
            private var names: [String] = []
            func add(_ name: String) { lock.withLock { names.append(name) } }
            var all: [String] { lock.withLock { names } }
        }
    }

    /// A check that passes while `flag` exists.
    static func fileCheck(_ flag: String, intervalMs: UInt32, retries: UInt32) -> Flotilla_V1_HealthCheck {
        var check = Flotilla_V1_HealthCheck()
        check.command = ["/bin/sh", "-c", "test -f \(flag)"]
        check.intervalMs = intervalMs
        check.timeoutMs = intervalMs * 9 / 10
        check.retries = retries
        return check
    }

    /// Whether the task's latest report satisfies `condition` within 10 s.
    static func eventuallyReported(
        _ reports: Reports, _ worker: TaskWorker, task: String, _ condition: @escaping @Sendable (Flotilla_V1_TaskStatus) -> Bool
    ) async throws -> Bool {
        try await eventually {
            await reports.collect(worker)
            return reports[task].map(condition) ?? false
        }
    }

    static func withWorker(
        settings: TaskWorker.Settings = TaskWorker.Settings(), metrics: any MetricsFactory = NOOPMetricsHandler.instance,
        _ body: (TaskWorker) async throws -> Void
    ) async throws {
        let worker = TaskWorker(logger: Logger(label: "worker"), settings: settings, metrics: metrics)
        do {
            try await body(worker)
        } catch {
            await worker.stopAll()
            throw error
        }
        await worker.stopAll()
    }

    @Test("changes apply on top of the generation before them; a gap is ignored and asks for the complete set, which repairs it")
    func deltasAndResync() async throws {
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("a")]))
            #expect(await worker.runningTaskIDs == ["a"])
            await worker.apply(Self.update(complete: false, generation: 2, [Self.assignment("b")]))
            #expect(await worker.runningTaskIDs == ["a", "b"])
            #expect(await worker.generation == 2)

            // Generation 3 never arrived: 4 is not applied, and the worker asks for everything.
            await worker.apply(Self.update(complete: false, generation: 4, [Self.assignment("c")], removed: ["a"]))
            #expect(await worker.runningTaskIDs == ["a", "b"])
            #expect(await worker.needsResync)
            await worker.apply(Self.update(complete: false, generation: 5, [Self.assignment("d")]))
            #expect(await worker.runningTaskIDs == ["a", "b"])

            // The complete set is the whole truth: a is not in it, so it stops.
            await worker.apply(Self.update(complete: true, generation: 6, [Self.assignment("b"), Self.assignment("c")]))
            #expect(await !worker.needsResync)
            #expect(await worker.runningTaskIDs == ["b", "c"])
            // Removal and a desired shutdown both stop a task.
            await worker.apply(Self.update(complete: false, generation: 7, [Self.assignment("c", desired: .shutdown)], removed: ["b"]))
            #expect(await worker.runningTaskIDs.isEmpty)
            let reports = Reports()
            await reports.collect(worker)
            #expect(reports["a"]?.state == .shutdown)
            #expect(reports["b"]?.state == .shutdown)
            #expect(reports["c"]?.state == .shutdown)
        }
    }

    @Test("a task with a command check is starting until the check passes, running after, and failed and stopped after `retries` failures in a row")
    func commandHealthCheck() async throws {
        let directory = try TemporaryDirectory()
        let flag = directory.path + "/healthy"
        let check = Self.fileCheck(flag, intervalMs: 200, retries: 2)
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("t", health: check)]))
            let reports = Reports()
            await reports.collect(worker)
            #expect(reports["t"]?.state == .starting)
            // Becomes healthy before the check fails twice in a row (no start period here).
            #expect(FileManager.default.createFile(atPath: flag, contents: nil))
            #expect(try await eventually(timeout: .seconds(10)) {
                await reports.collect(worker)
                return reports["t"]?.state == .running
            })
            #expect(reports["t"]?.message.contains("healthy") == true)
            try FileManager.default.removeItem(atPath: flag)
            #expect(try await eventually(timeout: .seconds(10)) {
                await reports.collect(worker)
                return reports["t"]?.state == .failed
            })
            #expect(reports["t"]?.message.contains("unhealthy") == true)
            #expect(reports["t"]?.message.contains("exited with status 1") == true)
            #expect(await worker.runningTaskIDs.isEmpty)
        }
    }

    @Test("failures within the start period do not count until the task was healthy once")
    func startPeriod() async throws {
        var check = Flotilla_V1_HealthCheck()
        check.command = ["false"]
        check.intervalMs = 100
        check.timeoutMs = 90
        check.retries = 1
        check.startPeriodMs = 60_000
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("slow", health: check)]))
            try await Task.sleep(for: .seconds(2))
            let reports = Reports()
            await reports.collect(worker)
            #expect(reports["slow"]?.state == .starting)
            #expect(await worker.runningTaskIDs == ["slow"])
        }
    }

    @Test("an HTTP check passes on 2xx and fails on 404, naming the answer")
    func httpHealthCheck() async throws {
        var good = Flotilla_V1_HealthCheck()
        good.httpPath = "/"
        good.intervalMs = 300
        good.timeoutMs = 250
        good.retries = 2
        good.startPeriodMs = 3_000
        var bad = good
        bad.httpPath = "/missing"
        let directory = try TemporaryDirectory()
        let server = "cd \(directory.path) && exec python3 -m http.server --bind 127.0.0.1 $PORT"
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [
                Self.assignment("good", command: server, health: good, port: true),
                Self.assignment("bad", command: server, health: bad, port: true),
            ]))
            let reports = Reports()
            let settled = try await eventually(timeout: .seconds(30)) {
                await reports.collect(worker)
                return reports["good"]?.state == .running && reports["bad"]?.state == .failed
            }
            #expect(settled)
            #expect(reports["bad"]?.message.contains("answered 404") == true)
            #expect(await worker.runningTaskIDs == ["good"])
        }
    }

    @Test("a task stopped on purpose passes through the stop hook first (the load balancer drains it there); one that exits does not")
    func stopHook() async throws {
        let hooked = Reports.Names()
        let worker = TaskWorker(logger: Logger(label: "worker"), beforeStop: { assignment in
            hooked.add(assignment.taskID)
        })
        await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("kept"), Self.assignment("dies", command: "exit 2")]))
        let reports = Reports()
        #expect(try await eventually {
            await reports.collect(worker)
            return reports["dies"]?.state == .failed && reports["kept"]?.state == .running
        })
        await worker.apply(Self.update(complete: false, generation: 2, [], removed: ["kept"]))
        #expect(hooked.all == ["kept"])
        await reports.collect(worker)
        #expect(reports["kept"]?.state == .shutdown)
        await worker.stopAll()
    }

    @Test("tasks one update stops drain at the same time: every stop hook has begun before the first ends")
    func stopsOfOneUpdateOverlap() async throws {
        let events = Reports.Names()
        let worker = TaskWorker(logger: Logger(label: "worker"), beforeStop: { assignment in
            events.add("begin \(assignment.taskID)")
            // Holds the drain until all three have begun (5 s at most: stopped one after another, the first would
            // end alone).
            _ = try? await eventually(timeout: .seconds(5)) { events.all.filter { $0.hasPrefix("begin") }.count == 3 }
            events.add("end \(assignment.taskID)")
        })
        let names = ["x", "y", "z"]
        await worker.apply(Self.update(complete: true, generation: 1, names.map { Self.assignment($0) }))
        let reports = Reports()
        #expect(try await eventually {
            await reports.collect(worker)
            return names.allSatisfy { reports[$0]?.state == .running }
        })
        await worker.apply(Self.update(complete: false, generation: 2, [Self.assignment("z", desired: .shutdown)], removed: ["x", "y"]))
        let log = events.all
        let firstEnd = log.firstIndex { $0.hasPrefix("end") } ?? log.count
        #expect(log.prefix(firstEnd).count == 3, "all three drains began before one ended: \(log)")
        #expect(await worker.runningTaskIDs.isEmpty)
        await worker.stopAll()
    }

    /// A runtime that runs nothing: it remembers what it was asked to start, and "exits" when stopped.
    final class FakeRuntime: ContainerRuntime, @unchecked Sendable {
        let name = "fake"
        private let lock = NSLock()
        private var exits: [Int32: @Sendable (TaskExit) -> Void] = [:]
        private(set) var started: [String] = []

        func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (TaskExit) -> Void) async throws -> RuntimeHandle {
            lock.withLock {
                started.append(launch.taskID)
                exits[Int32(started.count)] = onExit
                return RuntimeHandle(runtime: name, pid: Int32(started.count))
            }
        }

        func stop(_ handle: RuntimeHandle, grace: Duration, exited: @Sendable () async -> Bool) async {
            let exit = lock.withLock { exits.removeValue(forKey: handle.pid) }
            exit?(TaskExit(status: 143, oomKilled: false))
            while !(await exited()) { try? await Task.sleep(for: .milliseconds(5)) }
        }

        func exec(_ handle: RuntimeHandle, launch: TaskLaunch, command: [String], timeout: Duration) async throws -> Int32 { 0 }

        /// Task n has used n ms of CPU and n KiB of memory.
        func stats(_ handle: RuntimeHandle) -> TaskStats? {
            TaskStats(cpuNanoseconds: UInt64(handle.pid) * 1_000_000, memoryBytes: UInt64(handle.pid) * 1024)
        }
    }

    @Test("task usage lists the running tasks the runtime can read, stamped with the time of the read; not the stopped ones")
    func taskUsage() async throws {
        let fake = FakeRuntime()
        let worker = TaskWorker(logger: Logger(label: "worker"), runtimes: [fake])
        #expect(await worker.taskUsage().isEmpty, "nothing runs")
        await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("a", driver: "fake"), Self.assignment("b", driver: "fake")]))
        #expect(try await eventually { await worker.taskUsage().count == 2 })
        let before = UInt64(Date().timeIntervalSince1970 * 1000)
        let usage = await worker.taskUsage()
        let pids = Dictionary(uniqueKeysWithValues: fake.started.enumerated().map { ($0.element, UInt64($0.offset + 1)) })
        #expect(usage.map(\.taskID) == ["a", "b"])
        for entry in usage {
            let pid = try #require(pids[entry.taskID])
            #expect(entry.cpuUsageUsec == pid * 1_000 && entry.memoryBytes == pid * 1024, "\(entry)")
            #expect(entry.takenMs >= before - 1_000 && entry.takenMs <= before + 5_000)
        }
        await worker.apply(Self.update(complete: false, generation: 2, [Self.assignment("a", driver: "fake", desired: .shutdown)]))
        #expect(try await eventually { await worker.taskUsage().map(\.taskID) == ["b"] })
        await worker.stopAll()
    }

    @Test("a task runs on the runtime its spec's driver names; a driver the agent lacks fails the task, saying which it has")
    func runtimes() async throws {
        let fake = FakeRuntime()
        let worker = TaskWorker(logger: Logger(label: "worker"), runtimes: [fake])
        let onFake = Self.assignment("on-fake", driver: "fake")
        let onOCI = Self.assignment("on-oci", driver: "oci")
        await worker.apply(Self.update(complete: true, generation: 1, [onFake, onOCI]))
        #expect(try await eventually { fake.started == ["on-fake"] })
        #expect(await worker.runningTaskIDs == ["on-fake"])
        let reports = Reports()
        await reports.collect(worker)
        #expect(reports["on-oci"]?.state == .failed)
        #expect(reports["on-oci"]?.message == "the oci driver is not available on this agent (it has: fake, process)")
        await worker.apply(Self.update(complete: true, generation: 2, []))
        #expect(await worker.runningTaskIDs.isEmpty)
        await reports.collect(worker)
        #expect(reports["on-fake"]?.state == .shutdown)
    }

    /// A runtime whose `prepare` (an image pull, say) waits until the test opens the gate, or fails for tasks
    /// named "broken".
    final class SlowPreparingRuntime: ContainerRuntime, @unchecked Sendable {
        let name = "slow"
        private let lock = NSLock()
        private var gate: CheckedContinuation<Void, Never>?
        private(set) var prepared: [String] = []
        private(set) var started: [String] = []

        func prepare(_ launch: TaskLaunch) async throws {
            lock.withLock { prepared.append(launch.taskID) }
            if launch.taskID == "broken" { throw SlowFailure() }
            await withCheckedContinuation { continuation in lock.withLock { gate = continuation } }
        }

        var waiting: Bool { lock.withLock { gate != nil } }

        func open() { lock.withLock { gate.take() }?.resume() }

        func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (TaskExit) -> Void) async throws -> RuntimeHandle {
            lock.withLock { started.append(launch.taskID) }
            return RuntimeHandle(runtime: name, pid: 1)
        }

        func stop(_ handle: RuntimeHandle, grace: Duration, exited: @Sendable () async -> Bool) async {}

        func exec(_ handle: RuntimeHandle, launch: TaskLaunch, command: [String], timeout: Duration) async throws -> Int32 { 0 }
    }

    struct SlowFailure: Error, CustomStringConvertible {
        var description: String { "image registry.local/web:9 not found in the registry (manifest unknown)" }
    }

    @Test("a task is prepared (its image pulled) before it starts: updates meanwhile neither start it twice nor lose its removal; a failed preparation fails the task with the reason")
    func preparation() async throws {
        let runtime = SlowPreparingRuntime()
        let worker = TaskWorker(logger: Logger(label: "worker"), runtimes: [runtime])
        let task = Self.assignment("pulling", driver: "slow")
        let firstUpdate = Self.update(complete: true, generation: 1, [task])
        let first = Task { await worker.apply(firstUpdate) }
        let deadline = ContinuousClock.now + .seconds(10)
        while !runtime.waiting && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(runtime.waiting)
        // The same set again while it prepares: no second preparation. Then the task is removed.
        await worker.apply(Self.update(complete: true, generation: 2, [task]))
        #expect(runtime.prepared == ["pulling"])
        await worker.apply(Self.update(complete: true, generation: 3, []))
        runtime.open()
        await first.value
        #expect(try await eventually { await worker.supervisedCount == 0 })
        #expect(runtime.started.isEmpty, "removed while preparing: never started")
        let reports = Reports()
        await reports.collect(worker)
        #expect(reports["pulling"]?.state == .shutdown)
        #expect(await worker.runningTaskIDs.isEmpty)

        await worker.apply(Self.update(complete: true, generation: 4, [Self.assignment("broken", driver: "slow")]))
        #expect(try await Self.eventuallyReported(reports, worker, task: "broken") { $0.state == .failed })
        #expect(reports["broken"]?.message == "could not start: image registry.local/web:9 not found in the registry (manifest unknown)")
    }

    @Test("the health judge: first success is healthy; only consecutive failures count; the start period forgives")
    func judge() {
        var judge = HealthJudge(retries: 3, startPeriod: .seconds(10))
        #expect(judge.record(success: false, sinceStart: .seconds(1)) == nil)
        #expect(judge.consecutiveFailures == 0)
        #expect(judge.record(success: true, sinceStart: .seconds(2)) == .healthy)
        #expect(judge.record(success: true, sinceStart: .seconds(3)) == nil)
        #expect(judge.record(success: false, sinceStart: .seconds(4)) == nil)
        #expect(judge.record(success: false, sinceStart: .seconds(5)) == nil)
        #expect(judge.record(success: true, sinceStart: .seconds(6)) == nil)
        #expect(judge.consecutiveFailures == 0)
        #expect(judge.record(success: false, sinceStart: .seconds(7)) == nil)
        #expect(judge.record(success: false, sinceStart: .seconds(8)) == nil)
        #expect(judge.record(success: false, sinceStart: .seconds(9)) == .unhealthy)
        #expect(judge.nextDelay(interval: .seconds(5)) == .seconds(5))
        #expect(judge.record(success: false, sinceStart: .seconds(10)) == nil, "already unhealthy")
        #expect(judge.record(success: true, sinceStart: .seconds(11)) == .healthy, "a readiness check comes back")
        let fresh = HealthJudge(retries: 3, startPeriod: .zero)
        #expect(fresh.nextDelay(interval: .seconds(5)) == .seconds(1))
    }

    // MARK: - Supervision

    @Test("restart backoff: the delay doubles from the policy's up to the cap; a long run resets it; 5 restarts in a row give the task back")
    func backoffPolicy() {
        var backoff = RestartBackoff(condition: "any", delay: .seconds(1), cap: .seconds(10), resetAfter: .seconds(600))
        var now = Duration.zero
        var delays: [Duration] = []
        for _ in 0..<5 {
            guard case .restart(let after, _) = backoff.stopped(failed: true, ranFor: .seconds(1), now: now) else {
                Issue.record("expected a restart")
                return
            }
            delays.append(after)
            now += after + .seconds(1)
        }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10)], "doubling, capped")
        #expect(backoff.stopped(failed: true, ranFor: .seconds(1), now: now) == .giveUp("failed 6 times in a row on this node"))

        var reset = RestartBackoff(condition: "any", delay: .seconds(1))
        _ = reset.stopped(failed: true, ranFor: .seconds(1), now: .zero)
        _ = reset.stopped(failed: true, ranFor: .seconds(1), now: .seconds(10))
        #expect(reset.stopped(failed: true, ranFor: .seconds(1), now: .seconds(20)) == .restart(after: .seconds(4), restart: 3))
        #expect(reset.stopped(failed: true, ranFor: .seconds(601), now: .seconds(700)) == .restart(after: .seconds(1), restart: 4),
                "ten minutes of running start the backoff over")

        var onFailure = RestartBackoff(condition: "on-failure", delay: .seconds(1))
        #expect(onFailure.stopped(failed: false, ranFor: .seconds(1), now: .zero) == .done)
        #expect(onFailure.stopped(failed: true, ranFor: .seconds(1), now: .zero) == .restart(after: .seconds(1), restart: 1))
        var never = RestartBackoff(condition: "none", delay: .seconds(1))
        #expect(never.stopped(failed: true, ranFor: .seconds(1), now: .zero) == .done)

        var limited = RestartBackoff(condition: "any", delay: .seconds(1), maxAttempts: 2, window: .seconds(60))
        #expect(limited.stopped(failed: true, ranFor: .seconds(700), now: .seconds(0)) == .restart(after: .seconds(1), restart: 1))
        #expect(limited.stopped(failed: true, ranFor: .seconds(700), now: .seconds(10)) == .restart(after: .seconds(1), restart: 2))
        #expect(limited.stopped(failed: true, ranFor: .seconds(700), now: .seconds(20)) == .giveUp("restart limit reached (2 restarts within 1m)"))
        #expect(limited.stopped(failed: true, ranFor: .seconds(700), now: .seconds(100)) == .restart(after: .seconds(1), restart: 3),
                "restarts older than the window no longer count")
    }

    @Test("a crashing task is restarted in place, each wait twice the one before, and given back as failed after 5 restarts in a row; the starts and restarts are counted")
    func restartBackoffGrows() async throws {
        let directory = try TemporaryDirectory()
        let starts = directory.path + "/starts"
        let command = "date +%s%N >> \(starts); exit 3"
        let registry = PrometheusCollectorRegistry()
        try await Self.withWorker(metrics: PrometheusMetricsFactory(registry: registry)) { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("crash", command: command, restart: "any", restartDelayMs: 100)]))
            let reports = Reports()
            let gaveUp = try await eventually(timeout: .seconds(20)) {
                await reports.collect(worker)
                return reports["crash"]?.state == .failed
            }
            #expect(gaveUp)
            #expect(reports["crash"]?.message == "exited with status 3; failed 6 times in a row on this node")
            #expect(reports["crash"]?.exitCode == 3)
            #expect(reports["crash"]?.restarts == 5)
            let times = try String(contentsOfFile: starts, encoding: .utf8).split(separator: "\n").compactMap { Int64($0) }
            #expect(times.count == 6)
            let gaps = zip(times.dropFirst(), times).map { ($0 - $1) / 1_000_000 }
            for (gap, delay) in zip(gaps, [100, 200, 400, 800, 1600]) {
                #expect(gap >= Int64(delay), "waited at least \(delay) ms before restarting (waited \(gap) ms)")
            }
            #expect(await worker.runningTaskIDs.isEmpty)
            let metrics = try PrometheusExposition(parsing: registry.emitToString())
            #expect(metrics.value("flotilla_container_starts_total") == 6)
            #expect(metrics.value("flotilla_container_restarts_total") == 5)
        }
    }

    @Test("a task that ran longer than the reset time starts its backoff over, and is never given back for it")
    func restartBackoffResets() async throws {
        var settings = TaskWorker.Settings()
        settings.restartResetAfter = .milliseconds(300)
        try await Self.withWorker(settings: settings) { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [
                Self.assignment("slow-crash", command: "sleep 0.4; exit 1", restart: "on-failure", restartDelayMs: 50)]))
            let reports = Reports()
            let manyRestarts = try await eventually(timeout: .seconds(20)) {
                await reports.collect(worker)
                return (reports["slow-crash"]?.restarts ?? 0) >= 7
            }
            #expect(manyRestarts, "more restarts than 5 in a row, since each run outlasted the reset time")
            #expect(reports["slow-crash"]?.message.contains("restarting in 50ms") == true, "\(reports["slow-crash"]?.message ?? "")")
            #expect(reports["slow-crash"]?.state != .failed)
        }
    }

    @Test("a liveness failure restarts the task in place; the restart is reported with the task")
    func livenessRestart() async throws {
        let directory = try TemporaryDirectory()
        let flag = directory.path + "/alive"
        #expect(FileManager.default.createFile(atPath: flag, contents: nil))
        let check = Self.fileCheck(flag, intervalMs: 100, retries: 2)
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [
                Self.assignment("live", health: check, restart: "on-failure", restartDelayMs: 100)]))
            let reports = Reports()
            #expect(try await eventually {
                await reports.collect(worker)
                return reports["live"]?.state == .running && reports["live"]?.health == "healthy"
            })
            #expect(reports["live"]?.ready == true)
            try FileManager.default.removeItem(atPath: flag)
            #expect(try await eventually {
                await reports.collect(worker)
                return reports["live"]?.restarts == 1
            })
            #expect(reports["live"]?.message.hasPrefix("unhealthy: the health check command exited with status 1") == true, "\(reports["live"]?.message ?? "")")
            #expect(reports["live"]?.ready == false)
            #expect(FileManager.default.createFile(atPath: flag, contents: nil))
            let healthyAgain = try await eventually {
                await reports.collect(worker)
                return reports["live"]?.state == .running && reports["live"]?.health == "healthy"
            }
            #expect(healthyAgain, "healthy again after the restart")
            #expect(reports["live"]?.restarts == 1)
            #expect(await worker.runningTaskIDs == ["live"])
        }
    }

    @Test("readiness toggles whether the task is ready, both ways, without restarting it")
    func readinessToggles() async throws {
        let directory = try TemporaryDirectory()
        let flag = directory.path + "/ready"
        let check = Self.fileCheck(flag, intervalMs: 100, retries: 1)
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [Self.assignment("r", readiness: check, restart: "any")]))
            let reports = Reports()
            #expect(try await eventually {
                await reports.collect(worker)
                return reports["r"]?.state == .running
            })
            #expect(reports["r"]?.ready == false, "running, but not ready until its readiness check passes")
            for ready in [true, false, true] {
                if ready {
                    #expect(FileManager.default.createFile(atPath: flag, contents: nil))
                } else {
                    try FileManager.default.removeItem(atPath: flag)
                }
                let toggled = try await Self.eventuallyReported(reports, worker, task: "r") { $0.ready == ready }
                #expect(toggled, "ready: \(ready)")
                #expect(reports["r"]?.state == .running)
                #expect(reports["r"]?.restarts == 0)
            }
        }
    }

    @Test("a TCP check passes once the task accepts connections on its port, and names the address when it cannot")
    func tcpCheck() async throws {
        var check = Flotilla_V1_HealthCheck()
        check.tcp = true
        check.intervalMs = 200
        check.timeoutMs = 150
        check.retries = 2
        // python3 may take a while to listen on a busy machine: failures before then are forgiven.
        check.startPeriodMs = 3_000
        let directory = try TemporaryDirectory()
        let server = "cd \(directory.path) && exec python3 -m http.server --bind 127.0.0.1 $PORT"
        try await Self.withWorker { worker in
            await worker.apply(Self.update(complete: true, generation: 1, [
                Self.assignment("listens", command: server, health: check, port: true),
                Self.assignment("deaf", command: "exec sleep 60", health: check, port: true),
            ]))
            let reports = Reports()
            let settled = try await eventually(timeout: .seconds(30)) {
                await reports.collect(worker)
                return reports["listens"]?.state == .running && reports["deaf"]?.state == .failed
            }
            #expect(settled)
            #expect(reports["listens"]?.address.hasPrefix("127.0.0.1:") == true)
            #expect(reports["deaf"]?.message.contains("connecting to 127.0.0.1:") == true, "\(reports["deaf"]?.message ?? "")")
        }
    }
}

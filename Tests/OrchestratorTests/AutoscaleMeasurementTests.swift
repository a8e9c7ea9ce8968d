import Messages
import Orchestrator
import Testing

/// What the leader measures of an autoscaled service: its ready tasks only.
@Suite struct AutoscaleMeasurementTests {
    static func task(_ id: String, state: Flotilla_V1_TaskState = .running, ready: Bool = true, desired: Flotilla_V1_TaskState = .running) -> Flotilla_V1_TaskRecord {
        var task = Flotilla_V1_TaskRecord()
        task.id = id
        task.serviceID = "web"
        task.state = state
        task.desiredState = desired
        task.ready = ready
        return task
    }

    static var service: Flotilla_V1_ServiceRecord {
        var service = Flotilla_V1_ServiceRecord()
        service.id = "web"
        service.spec.name = "web"
        service.spec.replicas = 4
        service.spec.resources.cpuReservationMillis = 500
        return service
    }

    @Test("traffic, CPU and memory count the ready tasks only")
    func readyTasksOnly() {
        var traffic = ServiceTraffic(windowMillis: 10_000)
        var usage = TaskUsageTracker(windowMillis: 10_000)
        let counts = ["t1", "t2", "t3", "t4"]
        for step in 0...2 {
            let now = UInt64(step) * 2_000
            let count = UInt64(step) * 40  // 20 requests/s to each task
            traffic.record(ServiceTrafficTests.report(takenMs: now, Dictionary(uniqueKeysWithValues: counts.map { ($0, count) }), active: 2), from: "n1", receivedMillis: now)
            // A quarter core each: half of the reservation.
            usage.record(counts.map { TaskUsageTrackerTests.usage($0, cpuUsec: UInt64(step) * 500_000, memory: 100, takenMs: now) }, from: "n1", receivedMillis: now)
        }
        let tasks = [Self.task("t1"), Self.task("t2"), Self.task("t3", ready: false), Self.task("t4", desired: .shutdown), Self.task("t5", state: .starting)]
        let measured = AutoscaleMeasurement(service: Self.service, tasks: tasks, traffic: traffic, usage: usage, nowMillis: 4_000)
        #expect(measured.replicas == 4 && measured.ready == 2)
        #expect(measured.measured && measured.nodesReporting == 1)
        #expect(abs(measured.requestsPerSecond - 40) < 0.001, "t1 and t2 at 20/s: \(measured.requestsPerSecond)")
        #expect(measured.activeConnections == 4)
        #expect(measured.cpuMeasured && abs(measured.cpuPercent - 50) < 0.001, "\(measured.cpuPercent)")
        #expect(measured.memoryBytes == 200)
        #expect(measured.observation == AutoscaleObservation(requestsPerSecond: measured.requestsPerSecond, activeConnections: 4, cpuPercent: measured.cpuPercent))
    }

    @Test("before any report nothing is measured, and the observation is empty")
    func nothingReported() {
        let measured = AutoscaleMeasurement(
            service: Self.service, tasks: [Self.task("t1")], traffic: ServiceTraffic(), usage: TaskUsageTracker(), nowMillis: 1_000)
        #expect(!measured.measured && !measured.cpuMeasured && measured.ready == 1)
        #expect(measured.observation == AutoscaleObservation())
    }
}

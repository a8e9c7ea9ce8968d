import Messages
import Orchestrator
import Testing

/// The leader's view of each task's CPU and memory, from the usage reports of the nodes.
@Suite struct TaskUsageTrackerTests {
    static func usage(_ task: String, cpuUsec: UInt64, memory: UInt64 = 64 << 20, takenMs: UInt64) -> Flotilla_V1_TaskUsage {
        var usage = Flotilla_V1_TaskUsage()
        usage.taskID = task
        usage.cpuUsageUsec = cpuUsec
        usage.memoryBytes = memory
        usage.takenMs = takenMs
        return usage
    }

    static func close(_ value: Double?, _ expected: Double) -> Bool { value.map { abs($0 - expected) < 0.001 } ?? false }

    @Test("CPU is the counter's growth over the read times, as a percentage of the reservation")
    func cpuPercentOfTheReservation() {
        var tracker = TaskUsageTracker(windowMillis: 10_000)
        // Half a core busy: 500 ms of CPU per second. The node's clock is far from the leader's.
        for step in 0...5 {
            let now = UInt64(step) * 2_000
            tracker.record([Self.usage("t1", cpuUsec: UInt64(step) * 1_000_000, takenMs: 1_700_000_000_000 + now)], from: "n1", receivedMillis: now + 3)
        }
        #expect(Self.close(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 10_003)?.cpuPercent, 50), "of one core with no reservation")
        #expect(Self.close(tracker.usage(ofTask: "t1", reservedCPUMillis: 250, nowMillis: 10_003)?.cpuPercent, 200), "twice a quarter core")
        #expect(Self.close(tracker.usage(ofTask: "t1", reservedCPUMillis: 2_000, nowMillis: 10_003)?.cpuPercent, 25))
        #expect(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 10_003)?.memoryBytes == 64 << 20)
        #expect(tracker.usage(ofTask: "other", reservedCPUMillis: 0, nowMillis: 10_003) == nil)
    }

    @Test("one read gives memory but no CPU rate yet")
    func oneReadHasNoRate() {
        var tracker = TaskUsageTracker(windowMillis: 10_000)
        tracker.record([Self.usage("t1", cpuUsec: 5_000_000, memory: 1_000, takenMs: 100)], from: "n1", receivedMillis: 0)
        #expect(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 500) == TaskUsageTracker.Usage(cpuPercent: nil, memoryBytes: 1_000))
    }

    @Test("a counter that goes back (the task restarted in a new cgroup) starts the rate over")
    func counterReset() {
        var tracker = TaskUsageTracker(windowMillis: 10_000)
        tracker.record([Self.usage("t1", cpuUsec: 9_000_000, takenMs: 0)], from: "n1", receivedMillis: 0)
        tracker.record([Self.usage("t1", cpuUsec: 10_000_000, takenMs: 2_000)], from: "n1", receivedMillis: 2_000)
        tracker.record([Self.usage("t1", cpuUsec: 100_000, takenMs: 4_000)], from: "n1", receivedMillis: 4_000)
        #expect(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 4_000)?.cpuPercent == nil, "no negative rate, no rate across the restart")
        tracker.record([Self.usage("t1", cpuUsec: 300_000, takenMs: 6_000)], from: "n1", receivedMillis: 6_000)
        #expect(Self.close(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 6_000)?.cpuPercent, 10))
    }

    @Test("the rate covers the window only, and a task not read within it is not measured")
    func window() {
        var tracker = TaskUsageTracker(windowMillis: 4_000)
        var cpu: UInt64 = 0
        for step in 0...10 {
            cpu += step <= 5 ? 200_000 : 1_800_000  // 10 % of a core, then 90 % from 12 s on
            tracker.record([Self.usage("t1", cpuUsec: cpu, takenMs: UInt64(step) * 2_000)], from: "n1", receivedMillis: UInt64(step) * 2_000)
            if step == 5 { #expect(Self.close(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 10_000)?.cpuPercent, 10)) }
        }
        #expect(Self.close(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 20_000)?.cpuPercent, 90), "the 10 % is out of the window")
        #expect(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 24_001) == nil, "last read more than a window ago")
    }

    @Test("tasks a node stops reporting, and every task of a forgotten node, are dropped")
    func tasksForgotten() {
        var tracker = TaskUsageTracker(windowMillis: 10_000)
        tracker.record([Self.usage("t1", cpuUsec: 0, takenMs: 0), Self.usage("t2", cpuUsec: 0, takenMs: 0)], from: "n1", receivedMillis: 0)
        tracker.record([Self.usage("t3", cpuUsec: 0, takenMs: 0)], from: "n2", receivedMillis: 0)
        tracker.record([Self.usage("t2", cpuUsec: 100_000, takenMs: 1_000)], from: "n1", receivedMillis: 1_000)
        #expect(tracker.usage(ofTask: "t1", reservedCPUMillis: 0, nowMillis: 1_000) == nil, "t1 stopped on n1")
        #expect(Self.close(tracker.usage(ofTask: "t2", reservedCPUMillis: 0, nowMillis: 1_000)?.cpuPercent, 10))
        #expect(tracker.usage(ofTask: "t3", reservedCPUMillis: 0, nowMillis: 1_000) != nil, "another node's report leaves n2's tasks alone")
        tracker.forget(node: "n2")
        #expect(tracker.usage(ofTask: "t3", reservedCPUMillis: 0, nowMillis: 1_000) == nil)
        #expect(tracker.trackedTasks == 1)
        // Stale entries of other nodes go at the next record.
        tracker.record([], from: "n9", receivedMillis: 50_000)
        #expect(tracker.trackedTasks == 0)
    }
}

public import Messages

/// Each task's CPU and memory as its agent reads them from the task's cgroup (about every 2 s): the autoscaler's
/// CPU input. Soft state on the leader, not in Raft (a new leader rebuilds it from the next reports).
///
/// CPU time is a cumulative counter, so a rate is its growth between two reads over the growth of the read
/// times, both from the same node (clocks of different nodes are never compared): percent of one core =
/// Δusage_usec / (Δtaken_ms × 10), and of the reservation that divided by the reserved cores.
public struct TaskUsageTracker: Sendable {
    /// What one task used over the window.
    public struct Usage: Sendable, Equatable {
        /// CPU as a percentage of the reservation (of one core when none is reserved); nil until two reads came
        /// within the window.
        public var cpuPercent: Double?
        /// Memory in use at the last read, bytes.
        public var memoryBytes: UInt64

        public init(cpuPercent: Double?, memoryBytes: UInt64) {
            self.cpuPercent = cpuPercent
            self.memoryBytes = memoryBytes
        }
    }

    struct Sample: Equatable {
        /// When the leader received it (its monotonic milliseconds), for the window.
        var receivedMillis: UInt64
        /// When the agent read it (that node's clock), for rates.
        var takenMillis: UInt64
        var cpuUsec: UInt64
        var memoryBytes: UInt64
    }

    struct Entry: Equatable {
        var node: String
        var samples: [Sample]
    }

    /// How far back rates look.
    public let windowMillis: UInt64
    private var tasks: [String: Entry] = [:]

    public init(windowMillis: UInt64 = 10_000) {
        self.windowMillis = max(1, windowMillis)
    }

    /// Tasks with a reading held (stale ones included until the next `record` drops them).
    public var trackedTasks: Int { tasks.count }

    /// Takes a node's report of every task it runs. Tasks that node reported before and not now stopped running
    /// there, and are forgotten; so are tasks of any node last read more than a window ago.
    public mutating func record(_ usages: [Flotilla_V1_TaskUsage], from node: String, receivedMillis now: UInt64) {
        let start = SlidingWindow.start(endingAt: now, length: windowMillis)
        let reported = Set(usages.map(\.taskID))
        tasks = tasks.filter { id, entry in
            (entry.node != node || reported.contains(id)) && (entry.samples.last?.receivedMillis ?? 0) >= start
        }
        for usage in usages where !usage.taskID.isEmpty {
            let sample = Sample(receivedMillis: now, takenMillis: usage.takenMs, cpuUsec: usage.cpuUsageUsec, memoryBytes: usage.memoryBytes)
            var entry = tasks[usage.taskID] ?? Entry(node: node, samples: [])
            if entry.node != node { entry = Entry(node: node, samples: []) }
            if let last = entry.samples.last, sample.cpuUsec < last.cpuUsec || sample.takenMillis <= last.takenMillis {
                entry.samples = []  // the task restarted in a new cgroup, or a read out of order
            }
            entry.samples.append(sample)
            entry.samples = SlidingWindow.trimmed(entry.samples, before: start, receivedMillis: \.receivedMillis)
            tasks[usage.taskID] = entry
        }
    }

    /// Forgets a node's tasks (its session ended).
    public mutating func forget(node: String) {
        tasks = tasks.filter { $0.value.node != node }
    }

    /// What task `id` used over the window ending at `now`; nil when it was not read within the window.
    /// `reservedCPUMillis`: its spec's CPU reservation (0: one core is the reference).
    public func usage(ofTask id: String, reservedCPUMillis: UInt64, nowMillis now: UInt64) -> Usage? {
        let start = SlidingWindow.start(endingAt: now, length: windowMillis)
        guard let samples = tasks[id]?.samples, let last = samples.last, last.receivedMillis >= start else { return nil }
        let kept = SlidingWindow.trimmed(samples, before: start, receivedMillis: \.receivedMillis)
        var usage = Usage(cpuPercent: nil, memoryBytes: last.memoryBytes)
        if let first = kept.first, last.takenMillis > first.takenMillis {
            let cores = reservedCPUMillis > 0 ? Double(reservedCPUMillis) / 1000 : 1
            usage.cpuPercent = Double(last.cpuUsec - first.cpuUsec) / (Double(last.takenMillis - first.takenMillis) * 10 * cores)
        }
        return usage
    }
}

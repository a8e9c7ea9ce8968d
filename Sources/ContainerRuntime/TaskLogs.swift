import Foundation
public import Logging
import NIOCore
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Limits of log capture. Sizes are in bytes.
public struct TaskLogConfiguration: Sendable {
    /// Where log directories live: `<directory>/<task id>/` (the agent uses `<data dir>/logs`).
    public var directory: String
    /// `task.log` is rotated before it grows past this (default 10 MiB).
    public var maxFileBytes = 10 << 20
    /// Rotated files kept, `task.log.1` (newest) to `task.log.N` (default 3; 0: `task.log` starts over).
    public var rotatedFiles = 3
    /// Longer lines are split into pieces of this size, marked partial (default 16 KiB).
    public var maxLineBytes = 16 << 10
    /// The kernel buffer of each output pipe (default 1 MiB): what a task can write while the agent is not
    /// reading (an agent restart) before its writes block. Best effort: capped by /proc/sys/fs/pipe-max-size
    /// for an unprivileged agent.
    public var pipeBufferBytes = 1 << 20
    /// Log directories of tasks no longer assigned to the node that are kept, newest first (default 32); older
    /// ones are removed.
    public var retainedFinishedTasks = 32

    public init(directory: String) {
        self.directory = directory
    }
}

/// Where a task's stdout and stderr go: FIFOs the agent's collector reads. A driver gives them to the task
/// opened read-write, so the task never gets SIGPIPE or EPIPE while no agent reads (it only blocks once the pipe
/// buffer is full).
public struct TaskOutput: Sendable, Hashable {
    public let stdout: String
    public let stderr: String

    public init(stdout: String, stderr: String) {
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// A node's task logs: per task a directory `<directory>/<task id>/` with the FIFOs the task writes to
/// (`stdout.pipe`, `stderr.pipe`) and its rotating log file (`task.log`, `task.log.1` …). Collectors read
/// the FIFOs on one event loop thread of their own (so a slow disk never stalls the agent's network), with no
/// thread per pipe.
///
/// The life of a task's logs: `capture` when it is first started (again after an agent restart, for a task
/// that is re-adopted), `release` when the node forgets the task (capture stops, the FIFOs go, the log files
/// stay, among the newest `retainedFinishedTasks`), `shutdown` when the agent stops (the FIFOs stay for the
/// next agent process). Reading is `cursor`.
public final class TaskLogs: Sendable {
    public let configuration: TaskLogConfiguration
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let collectors = Mutex<[String: TaskLogCollector]>([:])

    static let fileName = "task.log"

    static func pipePath(_ directory: String, _ stream: TaskLogStream) -> String {
        directory + "/" + stream.rawValue + ".pipe"
    }

    public init(configuration: TaskLogConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    deinit {
        group.shutdownGracefully { _ in }
    }

    /// The directory of a task's logs.
    public func directory(of taskID: String) -> String {
        configuration.directory + "/" + taskID
    }

    /// Starts capturing a task's output (idempotent) and returns the FIFOs to give it.
    public func capture(_ taskID: String) async throws -> TaskOutput {
        guard !taskID.isEmpty, !taskID.contains("/"), taskID != ".", taskID != ".." else {
            throw DriverError("'\(taskID)' cannot name a log directory")
        }
        let directory = directory(of: taskID)
        let output = TaskOutput(stdout: Self.pipePath(directory, .stdout), stderr: Self.pipePath(directory, .stderr))
        if collectors.withLock({ $0[taskID] }) != nil { return output }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let collector = try await TaskLogCollector.open(
            directory: directory, configuration: configuration, group: group,
            logger: logger.with(["task.id": "\(taskID)"]))
        let kept = collectors.withLock { collectors -> Bool in
            guard collectors[taskID] == nil else { return false }
            collectors[taskID] = collector
            return true
        }
        if !kept { await collector.close() }  // another capture of the same task won the race
        return output
    }

    /// Whether a task's output is being captured now.
    public func isCapturing(_ taskID: String) -> Bool {
        collectors.withLock { $0[taskID] != nil }
    }

    /// Records dropped for a task because they could not be written (disk full); 0 when not capturing.
    public func droppedRecords(_ taskID: String) -> Int {
        collectors.withLock { $0[taskID] }?.file.droppedRecords ?? 0
    }

    /// The node forgets the task (it no longer runs here): capture stops, its FIFOs are removed and its log
    /// files are kept among the newest `retainedFinishedTasks` finished ones.
    public func release(_ taskID: String) async {
        let collector = collectors.withLock { $0.removeValue(forKey: taskID) }
        await collector?.close()
        let directory = directory(of: taskID)
        for stream in TaskLogStream.allCases { unlink(Self.pipePath(directory, stream)) }
        prune()
    }

    /// After an agent restart: releases every task with FIFOs that is neither in `keeping` nor captured
    /// (what the last agent process left of tasks that no longer run).
    public func sweep(keeping: Set<String>) async {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: configuration.directory)) ?? []
        for name in names where !keeping.contains(name) && !isCapturing(name)
        && FileManager.default.fileExists(atPath: Self.pipePath(directory(of: name), .stdout)) {
            await release(name)
        }
        prune()
    }

    /// Stops every collector (agent shutdown). The FIFOs stay: tasks that keep running write into their buffers
    /// until the next agent process captures them again.
    public func shutdown() async {
        let all = collectors.withLock { collectors -> [TaskLogCollector] in
            defer { collectors = [:] }
            return Array(collectors.values)
        }
        for collector in all { await collector.close() }
    }

    /// Removes the log directories of finished tasks (no FIFOs) beyond the newest `retainedFinishedTasks`.
    private func prune() {
        let root = configuration.directory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let finished = names.filter { name in
            !isCapturing(name) && !FileManager.default.fileExists(atPath: Self.pipePath(root + "/" + name, .stdout))
        }
        guard finished.count > configuration.retainedFinishedTasks else { return }
        func modified(_ name: String) -> TimeInterval {
            let attributes = try? FileManager.default.attributesOfItem(atPath: root + "/" + name)
            return (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        }
        let oldestFirst = finished.map { ($0, modified($0)) }.sorted { $0.1 < $1.1 }.map(\.0)
        for name in oldestFirst.prefix(finished.count - configuration.retainedFinishedTasks) {
            try? FileManager.default.removeItem(atPath: root + "/" + name)
        }
    }

    /// A reader of the task's log records, or nil when this node has no logs of the task.
    public func cursor(_ taskID: String, query: TaskLogQuery) throws -> TaskLogCursor? {
        let directory = directory(of: taskID)
        guard !taskID.contains("/"), FileManager.default.fileExists(atPath: directory) else { return nil }
        return try TaskLogCursor(path: directory + "/" + Self.fileName, rotatedFiles: configuration.rotatedFiles, query: query)
    }
}

extension Logger {
    /// A copy with more metadata.
    func with(_ metadata: Logger.Metadata) -> Logger {
        var copy = self
        for (key, value) in metadata { copy[metadataKey: key] = value }
        return copy
    }
}

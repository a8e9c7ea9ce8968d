public import ContainerRuntime
import Foundation
public import Logging
import Synchronization
import Transport
import Wire

/// Answers the leader's log subscriptions from the node's task logs: one `PublishLogs` call per subscription on
/// the session's connection, batches of lines read by `TaskLogCursor`s, ended when everything was sent (not
/// following) or when the leader ends the call (the admin stopped reading).
public final class LogPublisher: Sendable {
    /// Limits, with their defaults.
    public struct Limits: Sendable {
        /// Lines per message, and about this many bytes of text.
        public var maxLinesPerMessage = 256
        public var maxBytesPerMessage = 256 << 10
        /// Subscriptions answered at once (more: refused with a notice).
        public var maxSubscriptions = 16
        /// How often a followed task's log is looked at for new lines.
        public var followInterval = Duration.milliseconds(250)

        public init() {}
    }

    public let logs: TaskLogs
    private let limits: Limits
    private let logger: Logger
    private let active = Mutex(0)

    public init(logs: TaskLogs, limits: Limits = Limits(), logger: Logger) {
        self.logs = logs
        self.limits = limits
        self.logger = logger
    }

    /// Answers `subscription` on `client` until it is done; never throws (a failure only ends this answer).
    func publish(_ subscription: Flotilla_V1_LogSubscription, on client: RPCClient) async {
        let admitted = active.withLock { count -> Bool in
            guard count < limits.maxSubscriptions else { return false }
            count += 1
            return true
        }
        defer { if admitted { active.withLock { $0 -= 1 } } }
        do {
            try await client.bidirectional(Methods.publishLogs) { writer, responses in
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    group.addTask {
                        if admitted {
                            try await self.send(subscription, to: writer)
                        } else {
                            var refusal = Flotilla_V1_LogPublication()
                            refusal.subscriptionID = subscription.id
                            refusal.notices = ["too many log streams at once (\(self.limits.maxSubscriptions)); try again when one ends"]
                            try await writer.write(refusal)
                        }
                        writer.finish()
                        return false
                    }
                    // The call ends when the leader says so: after our half ended, or early (the admin left).
                    group.addTask {
                        for try await _ in responses {}
                        return true
                    }
                    while let callEnded = try await group.next() {
                        if callEnded {
                            group.cancelAll()
                            return
                        }
                    }
                }
            }
        } catch {
            logger.debug("log subscription ended", metadata: ["subscription": "\(subscription.id)", "error": "\(error)"])
        }
    }

    /// The first message names the subscription (with a notice per task this node has no logs of); then a
    /// batch of each task's lines in turn until all are sent; following, new lines of every task as they come.
    private func send(_ subscription: Flotilla_V1_LogSubscription, to writer: RequestWriter<Flotilla_V1_LogPublication>) async throws {
        let query = TaskLogQuery(
            tail: subscription.hasTail ? Int(subscription.tail) : nil,
            sinceUnixNanos: subscription.sinceUnixNano == 0 ? nil : subscription.sinceUnixNano,
            follow: subscription.follow)
        var first = Flotilla_V1_LogPublication()
        first.subscriptionID = subscription.id
        var cursors: [(task: String, cursor: TaskLogCursor)] = []
        for task in subscription.taskIds {
            if let cursor = try? logs.cursor(task, query: query) {
                cursors.append((task, cursor))
            } else {
                first.notices.append("task \(task) has no logs here (it never started on this node, or its logs were removed)")
            }
        }
        defer { for entry in cursors { entry.cursor.close() } }
        try await writer.write(first)
        var open = cursors
        while !open.isEmpty {
            try Task.checkCancellation()
            var sent = false
            var index = 0
            while index < open.count {
                let (task, cursor) = open[index]
                guard let records = cursor.next(maxRecords: limits.maxLinesPerMessage, maxBytes: limits.maxBytesPerMessage) else {
                    open.remove(at: index)  // everything sent (not following)
                    continue
                }
                index += 1
                guard !records.isEmpty else { continue }
                var message = Flotilla_V1_LogPublication()
                message.lines = records.map { Self.line($0, task: task) }
                try await writer.write(message)
                sent = true
            }
            if !sent && subscription.follow { try await Task.sleep(for: limits.followInterval) }
        }
    }

    static func line(_ record: TaskLogRecord, task: String) -> Flotilla_V1_LogLine {
        var line = Flotilla_V1_LogLine()
        line.taskID = task
        line.stream = record.stream == .stdout ? .stdout : .stderr
        line.timeUnixNano = record.unixNanos
        line.text = String(decoding: record.text, as: UTF8.self)
        line.partial = record.partial
        return line
    }
}

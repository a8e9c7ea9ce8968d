import AdminClient
import ArgumentParser
import ClusterModel
import Foundation
import Wire

/// Flags of `service logs` and `task logs`.
struct LogOptions: ParsableArguments {
    @Flag(name: [.customShort("f"), .long], help: "Keep streaming new lines until interrupted.") var follow = false
    @Option(help: ArgumentHelp("Only the last N lines of each task (default: all).", valueName: "N")) var tail: UInt32?
    @Option(help: ArgumentHelp("Only lines since a time: a duration ago (30s, 10m, 2h, 1d) or RFC 3339 (2026-01-02T10:00:00Z).", valueName: "time"))
    var since: String?
    @Flag(name: [.customShort("t"), .long], help: "Show each line's time (RFC 3339, UTC, nanoseconds).") var timestamps = false

    func validate() throws {
        if let since, LogOptions.unixNanos(since: since, now: 0) == nil {
            throw ValidationError("--since \(since) is neither a duration (30s, 10m, 2h, 1d) nor an RFC 3339 time (2026-01-02T10:00:00Z)")
        }
    }

    /// `--since` as nanoseconds since the Unix epoch, given the time now.
    static func unixNanos(since text: String, now: UInt64) -> UInt64? {
        if let time = RFC3339.parse(text) { return time }
        guard let seconds = TokenCommand.Create.seconds(text) else { return nil }
        let ago = seconds * 1_000_000_000
        return now > ago ? now - ago : 1
    }

    /// The request for `service` or `taskID`.
    func request(service: String = "", taskID: String = "") -> Flotilla_V1_TaskLogsRequest {
        var request = Flotilla_V1_TaskLogsRequest()
        request.service = service
        request.taskID = taskID
        request.follow = follow
        if let tail { request.tail = tail }
        if let since {
            let now = UInt64(Date().timeIntervalSince1970 * 1_000_000_000)
            request.sinceUnixNano = Self.unixNanos(since: since, now: now) ?? 0
        }
        return request
    }

    /// Streams the logs and prints them: `TASK@NODE | text` (stderr lines on stderr), or JSON lines; notices on
    /// stderr as warnings.
    func stream(_ request: Flotilla_V1_TaskLogsRequest, cluster: ClusterOptions) async throws {
        try await cluster.withClient { client in
            try await client.taskLogs(request) { batch in
                var out = ""
                var err = ""
                for line in batch.lines {
                    switch cluster.output {
                    case .json:
                        out += try jsonLine(LogLineJSON(line)) + "\n"
                    case .table:
                        let time = timestamps ? RFC3339.format(unixNanos: line.timeUnixNano) + " " : ""
                        let text = "\(line.taskID)@\(line.nodeName.isEmpty ? line.nodeID : line.nodeName) | \(time)\(line.text)\n"
                        if line.stream == .stderr { err += text } else { out += text }
                    }
                }
                for notice in batch.notices { err += "warning: \(notice)\n" }
                if !out.isEmpty { FileHandle.standardOutput.write(Data(out.utf8)) }
                if !err.isEmpty { FileHandle.standardError.write(Data(err.utf8)) }
            }
        }
    }
}

/// One line of `--output json`: a JSON object per line.
struct LogLineJSON: Encodable {
    let task: String
    let node: String
    let stream: String
    let time: String
    let text: String
    let partial: Bool?

    init(_ line: Flotilla_V1_LogLine) {
        task = line.taskID
        node = line.nodeName.isEmpty ? line.nodeID : line.nodeName
        stream = line.stream == .stderr ? "stderr" : "stdout"
        time = RFC3339.format(unixNanos: line.timeUnixNano)
        text = line.text
        partial = line.partial ? true : nil
    }
}

extension ServiceCommand {
    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "logs",
            abstract: "Show the output of a service's tasks, each line as TASK@NODE | text.",
            discussion: """
                Lines come from the agents of the nodes that ran the tasks, through the leader; a node that is down \
                is named in a warning. stdout lines go to stdout, stderr lines to stderr.
                """)
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var options: LogOptions
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await options.stream(options.request(service: name), cluster: cluster)
        }
    }
}

/// `flotilla task …`: one task.
struct TaskCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task", abstract: "Read one task's logs (task ids are in `flotilla service ps`).",
        subcommands: [Logs.self])

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "logs", abstract: "Show the output of one task, each line as TASK@NODE | text.")
        @Argument(help: "The task's id.") var task: String
        @OptionGroup var options: LogOptions
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await options.stream(options.request(taskID: task), cluster: cluster)
        }
    }
}

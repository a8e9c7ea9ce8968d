import AdminClient
import ArgumentParser
import ClusterModel
import Foundation
import Wire

/// `flotilla events`: what happened in the cluster, from the history every controller keeps.
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Show the cluster's events: services, tasks, nodes, controllers and leader elections.",
        discussion: """
            Events are derived from the replicated log, so every controller has the same history (the latest \
            1,000) and it survives a leader change. With --follow the command prints new events until \
            interrupted, reconnecting to a new leader and resuming after the last event it printed.
            """)

    @Flag(name: [.customShort("f"), .long], help: "Keep printing new events until interrupted.") var follow = false
    @Option(help: ArgumentHelp(
        "Only events since a time: a duration ago (30s, 10m, 2h, 1d), an RFC 3339 time (2026-01-02T10:00:00Z), or after an event id (123).",
        valueName: "time|id"))
    var since: String?
    @Option(name: .customLong("filter"), help: ArgumentHelp(
        "Only some events: type=T (a type, or a prefix without a dot: task), service=NAME, node=NAME; repeatable (types add up).",
        valueName: "key=value"))
    var filters: [String] = []
    @OptionGroup var cluster: ClusterOptions

    func validate() throws {
        if let since, EventsSince(since, nowMs: 0) == nil {
            throw ValidationError("--since \(since) is neither a duration (30s, 10m, 2h, 1d), an RFC 3339 time (2026-01-02T10:00:00Z) nor an event id (123)")
        }
        _ = try EventFilters(filters)
    }

    func run() async throws {
        var request = Flotilla_V1_EventsRequest()
        request.follow = follow
        let parsed = try EventFilters(filters)
        request.types = parsed.types
        request.service = parsed.service
        request.node = parsed.node
        switch since.flatMap({ EventsSince($0, nowMs: UInt64(Date().timeIntervalSince1970 * 1000)) }) {
        case .afterID(let id): request.sinceID = id
        case .atMs(let ms): request.sinceMs = ms
        case nil: break
        }
        let output = cluster.output
        var headerPrinted = output != .table
        try await cluster.withClient { client in
            try await client.events(request) { batch in
                var out = ""
                if !headerPrinted && !batch.events.isEmpty {
                    out = EventLine.header + "\n"
                    headerPrinted = true
                }
                for event in batch.events {
                    out += (output == .json ? try jsonLine(EventJSON(event)) : EventLine(event).text) + "\n"
                }
                if batch.missed > 0 {
                    FileHandle.standardError.write(Data("warning: \(batch.missed) events were dropped from the history before they could be read (it keeps the latest 1,000)\n".utf8))
                }
                if !out.isEmpty { FileHandle.standardOutput.write(Data(out.utf8)) }
            }
        }
    }
}

/// What `--since` names: an event to resume after, or a time.
enum EventsSince: Equatable {
    case afterID(UInt64)
    case atMs(UInt64)

    /// nil when `text` is none of an id, a duration and an RFC 3339 time.
    init?(_ text: String, nowMs: UInt64) {
        if let id = UInt64(text) {
            self = .afterID(id)
        } else if let nanos = RFC3339.parse(text) {
            self = .atMs(max(nanos / 1_000_000, 1))
        } else if let seconds = TokenCommand.Create.seconds(text) {
            self = .atMs(nowMs > seconds * 1000 ? nowMs - seconds * 1000 : 1)
        } else {
            return nil
        }
    }
}

/// The `--filter key=value` flags, checked: an unknown key is bad usage.
struct EventFilters: Equatable {
    var types: [String] = []
    var service = ""
    var node = ""

    init(_ flags: [String]) throws {
        for flag in flags {
            let parts = flag.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[1].isEmpty else {
                throw ValidationError("--filter \(flag) is not key=value; use type=T, service=NAME or node=NAME")
            }
            switch parts[0] {
            case "type": types.append(parts[1])
            case "service": service = parts[1]
            case "node": node = parts[1]
            default:
                throw ValidationError("--filter \(flag): unknown filter key '\(parts[0])'; use type=T, service=NAME or node=NAME")
            }
        }
    }
}

/// One event as a line of text: time, type, subject, message, in columns.
struct EventLine {
    static let header = row("TIME", "TYPE", "SUBJECT", "MESSAGE")
    let text: String

    init(_ event: Flotilla_V1_ClusterEvent) {
        text = Self.row(EventLine.time(event.atMs), event.type, Self.subject(event), event.message)
    }

    /// Columns are padded to fixed widths, as events stream and no table width can be known in advance.
    private static func row(_ time: String, _ type: String, _ subject: String, _ message: String) -> String {
        [pad(time, 24), pad(type, 19), pad(subject, 24), message].joined(separator: "   ")
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }

    /// `2026-01-02T10:00:00.123Z`: RFC 3339, UTC, milliseconds (what events carry).
    static func time(_ ms: UInt64) -> String {
        String(RFC3339.format(unixNanos: ms * 1_000_000).dropLast(7)) + "Z"
    }

    /// What the event is about: the task (with its service), the service, or the node or controller.
    static func subject(_ event: Flotilla_V1_ClusterEvent) -> String {
        let service = event.serviceName.isEmpty ? event.serviceID : event.serviceName
        if !event.taskID.isEmpty { return service.isEmpty ? event.taskID : "\(service)/\(event.taskID)" }
        if !service.isEmpty { return service }
        return event.nodeName.isEmpty ? event.nodeID : event.nodeName
    }
}

/// One event of `--output json`: a JSON object per line.
struct EventJSON: Encodable {
    let id: UInt64
    let index: UInt64
    let time: String
    let type: String
    let service: String?
    let serviceID: String?
    let task: String?
    let node: String?
    let nodeID: String?
    let message: String

    init(_ event: Flotilla_V1_ClusterEvent) {
        id = event.id
        index = event.index
        time = EventLine.time(event.atMs)
        type = event.type
        service = event.serviceName.isEmpty ? nil : event.serviceName
        serviceID = event.serviceID.isEmpty ? nil : event.serviceID
        task = event.taskID.isEmpty ? nil : event.taskID
        node = event.nodeName.isEmpty ? nil : event.nodeName
        nodeID = event.nodeID.isEmpty ? nil : event.nodeID
        message = event.message
    }

    enum CodingKeys: String, CodingKey {
        case id, index, time, type, service, serviceID = "service_id", task, node, nodeID = "node_id", message
    }
}

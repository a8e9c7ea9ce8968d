import AdminClient
import ArgumentParser
import Foundation
import Wire

/// `flotilla node …`: the nodes that run agents.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "List, inspect, drain, pause, label and remove nodes.",
        discussion: """
            A node is `ready` while its agent heartbeats to the leader and `down` once it misses three \
            heartbeat periods. Availability is yours to set: `active` takes new tasks, `pause` takes none, \
            `drain` moves its tasks away. A node is named by its id or its name.
            """,
        subcommands: [List.self, Inspect.self, Drain.self, Pause.self, Activate.self, Label.self, Remove.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the nodes.", aliases: ["list"])

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let nodes = try await cluster.withClient { try await $0.nodeList() }
            switch cluster.output {
            case .json:
                try printJSON(nodes.map(NodeJSON.init))
            case .table:
                var table = TextTable("ID", "NAME", "ADDRESS", "STATUS", "AVAILABILITY", "ROLE", "LABELS", "LAST HEARTBEAT", "VERSION")
                for node in nodes {
                    table.append(
                        node.id, node.name, node.address, node.status, node.availability, node.role,
                        NodeJSON.labelText(node.labels),
                        node.lastHeartbeatMs == 0 ? "-" : NodeJSON.ago(node.lastHeartbeatMs),
                        node.agentVersion.isEmpty ? "-" : node.agentVersion)
                }
                print(table.render())
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show everything about one node (JSON).")

        @Argument(help: "The node's id or name.")
        var node: String

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let nodes = try await cluster.withClient { try await $0.nodeList() }
            guard let found = nodes.first(where: { $0.id == node }) ?? nodes.first(where: { $0.name == node }) else {
                throw CLIError("no node with id or name '\(node)' (flotilla node ls lists them)")
            }
            try printJSON(NodeJSON(found))
        }
    }

    /// drain / pause / activate share everything but the availability they set.
    static func setAvailability(_ availability: String, node: String, cluster: ClusterOptions) async throws {
        let updated = try await cluster.withClient { try await $0.nodeUpdate(node, availability: availability) }
        try report(updated, cluster: cluster, "node \(updated.name) is now \(updated.availability)")
    }

    /// Prints an updated node: as JSON, or as the one line given.
    static func report(_ updated: Flotilla_V1_NodeInfo, cluster: ClusterOptions, _ line: String) throws {
        switch cluster.output {
        case .json: try printJSON(NodeJSON(updated))
        case .table: print(line)
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "drain", abstract: "Move every task off a node and place none there.")
        @Argument(help: "The node's id or name.") var node: String
        @OptionGroup var cluster: ClusterOptions
        func run() async throws { try await NodeCommand.setAvailability("drain", node: node, cluster: cluster) }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "pause", abstract: "Place no new tasks on a node; running ones stay.")
        @Argument(help: "The node's id or name.") var node: String
        @OptionGroup var cluster: ClusterOptions
        func run() async throws { try await NodeCommand.setAvailability("pause", node: node, cluster: cluster) }
    }

    struct Activate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "activate", abstract: "Let a node take tasks again.")
        @Argument(help: "The node's id or name.") var node: String
        @OptionGroup var cluster: ClusterOptions
        func run() async throws { try await NodeCommand.setAvailability("active", node: node, cluster: cluster) }
    }

    struct Label: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "label", abstract: "Add or remove node labels (used by placement constraints).", subcommands: [Add.self, Remove.self])

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "add", abstract: "Add or replace labels: KEY=VALUE ...")
            @Argument(help: "The node's id or name.") var node: String
            @Argument(help: "Labels as KEY=VALUE.") var labels: [String]
            @OptionGroup var cluster: ClusterOptions

            func validate() throws {
                for label in labels where !label.contains("=") {
                    throw ValidationError("label '\(label)' is not KEY=VALUE")
                }
            }

            func run() async throws {
                var add: [String: String] = [:]
                for label in labels {
                    let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    add[String(parts[0])] = String(parts[1])
                }
                let updated = try await cluster.withClient { try await $0.nodeUpdate(node, addLabels: add) }
                try NodeCommand.report(updated, cluster: cluster, "node \(updated.name) labels: \(NodeJSON.labelText(updated.labels))")
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove labels by key.")
            @Argument(help: "The node's id or name.") var node: String
            @Argument(help: "Label keys.") var keys: [String]
            @OptionGroup var cluster: ClusterOptions

            func run() async throws {
                let updated = try await cluster.withClient { try await $0.nodeUpdate(node, removeLabels: keys) }
                try NodeCommand.report(updated, cluster: cluster, "node \(updated.name) labels: \(NodeJSON.labelText(updated.labels))")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Remove a node from the cluster and revoke its certificate.",
            discussion: "Refused while the node is ready unless --force; stop its agent first.",
            aliases: ["remove"])

        @Argument(help: "The node's id or name.") var node: String
        @Flag(help: "Remove it even while its agent is running (the agent is refused from then on).") var force = false
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let id = try await cluster.withClient { try await $0.nodeRemove(node, force: force) }
            switch cluster.output {
            case .json: try printJSON(["removed": id])
            case .table: print("node \(node) (\(id)) removed; its certificate is refused from now on")
            }
        }
    }
}

/// `--output json` of a node.
struct NodeJSON: Encodable {
    let id: String
    let name: String
    let role: String
    let address: String
    let status: String
    let availability: String
    let labels: [String: String]
    let joinedAt: String
    let statusChangedAt: String
    let lastHeartbeat: String?
    let agentVersion: String

    enum CodingKeys: String, CodingKey {
        case id, name, role, address, status, availability, labels
        case joinedAt = "joined_at"
        case statusChangedAt = "status_changed_at"
        case lastHeartbeat = "last_heartbeat"
        case agentVersion = "agent_version"
    }

    init(_ node: Flotilla_V1_NodeInfo) {
        id = node.id
        name = node.name
        role = node.role
        address = node.address
        status = node.status
        availability = node.availability
        labels = Dictionary(node.labels.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        joinedAt = TokenJSON.time(node.joinedAtMs)
        statusChangedAt = TokenJSON.time(node.statusChangedAtMs)
        lastHeartbeat = node.lastHeartbeatMs == 0 ? nil : TokenJSON.time(node.lastHeartbeatMs)
        agentVersion = node.agentVersion
    }

    static func labelText(_ labels: [Flotilla_V1_Label]) -> String {
        labels.isEmpty ? "-" : labels.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    static func ago(_ milliseconds: UInt64) -> String {
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let seconds = Double(now > milliseconds ? now - milliseconds : 0) / 1000
        return String(format: "%.1fs ago", seconds)
    }
}

import AdminClient
import ArgumentParser
import Foundation
import Wire

/// `flotilla controller …`: the controllers (the Raft members that keep the cluster's state).
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "List and remove controllers, and move leadership between them.",
        subcommands: [List.self, Remove.self, TransferLeadership.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "List the controllers with their Raft membership and progress.",
            discussion: """
                MATCH (the leader's view of the member's replicated index) and LAG (entries behind the \
                leader's last index) are known to the leader only; they show '-' when a follower answered.
                """,
            aliases: ["list"])

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let list = try await cluster.withClient { try await $0.controllerList() }
            switch cluster.output {
            case .json:
                try printJSON(ControllerListJSON(list))
            case .table:
                let leaderAnswered = list.controllers.contains { $0.leader && $0.id == list.answeredBy }
                var table = TextTable("ID", "ADDRESS", "MEMBERSHIP", "LEADER", "TERM", "MATCH", "LAG")
                for controller in list.controllers {
                    table.append(
                        controller.id, controller.address, controller.membership, controller.leader ? "*" : "",
                        "\(controller.term)",
                        leaderAnswered ? "\(controller.matchIndex)" : "-",
                        leaderAnswered ? "\(controller.lag)" : "-")
                }
                print(table.render())
                print("commit \(list.commitIndex), applied \(list.appliedIndex) (answered by \(list.answeredBy))")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove",
            abstract: "Remove a controller from the cluster (the leader included).",
            discussion: """
                Stop the removed controller's process afterwards; its certificate is refused from then on. \
                Keep an odd number of controllers: removing one of three leaves a cluster that survives no loss.
                """,
            aliases: ["rm"])

        @Argument(help: "The controller's node id (see `flotilla controller ls`).")
        var id: String

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await cluster.withClient { try await $0.controllerRemove(id: id) }
            switch cluster.output {
            case .json: try printJSON(["removed": id])
            case .table: print("controller \(id) removed")
            }
        }
    }

    struct TransferLeadership: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "transfer-leadership",
            abstract: "Move Raft leadership to another controller and print the new leader.")

        @Argument(help: "The voter to lead (default: the most up-to-date other voter).")
        var id: String?

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let leader = try await cluster.withClient { try await $0.transferLeadership(to: id) }
            switch cluster.output {
            case .json: try printJSON(["leader": leader])
            case .table: print("leadership moved to \(leader)")
            }
        }
    }
}

/// `--output json` of `flotilla controller ls`.
struct ControllerListJSON: Encodable {
    struct Controller: Encodable {
        let id: String
        let address: String
        let membership: String
        let leader: Bool
        let term: UInt64
        let matchIndex: UInt64
        let lag: UInt64

        enum CodingKeys: String, CodingKey {
            case id, address, membership, leader, term, lag
            case matchIndex = "match_index"
        }
    }

    let controllers: [Controller]
    let commitIndex: UInt64
    let appliedIndex: UInt64
    let answeredBy: String

    enum CodingKeys: String, CodingKey {
        case controllers
        case commitIndex = "commit_index"
        case appliedIndex = "applied_index"
        case answeredBy = "answered_by"
    }

    init(_ response: Flotilla_V1_ControllerListResponse) {
        controllers = response.controllers.map {
            Controller(
                id: $0.id, address: $0.address, membership: $0.membership, leader: $0.leader, term: $0.term,
                matchIndex: $0.matchIndex, lag: $0.lag)
        }
        commitIndex = response.commitIndex
        appliedIndex = response.appliedIndex
        answeredBy = response.answeredBy
    }
}

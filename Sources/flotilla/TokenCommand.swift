import AdminClient
import ArgumentParser
import Foundation
import Wire

/// `flotilla token …`: join tokens, which let new agents and controllers into the cluster.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list and revoke join tokens.",
        discussion: """
            A node joins with a token: `flotilla-agent --token T` or `flotilla-controller --join ADDR --token T`. \
            A token pins the cluster's CA, so it cannot be used against another cluster, expires (24 h by \
            default), and can be limited to a number of joins. The cluster keeps only a hash of its secret: \
            `token create` is the only time the whole token is shown.
            """,
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create a join token and print it.")

        @Option(help: "Which nodes it admits: agent or controller.")
        var role: String

        @Option(help: ArgumentHelp("How long it is valid: a number with s, m, h or d (e.g. 30m, 24h, 7d).", valueName: "duration"))
        var ttl: String = "24h"

        @Option(help: ArgumentHelp("How many joins it admits (default: no limit until it expires).", valueName: "n"))
        var uses: UInt32 = 0

        @Flag(help: "Print the token alone (for scripts).")
        var quiet = false

        @OptionGroup var cluster: ClusterOptions

        func validate() throws {
            guard role == "agent" || role == "controller" else {
                throw ValidationError("--role must be agent or controller, not '\(role)'")
            }
            guard Self.seconds(ttl) != nil else {
                throw ValidationError("--ttl \(ttl) is not a duration; use a number with s, m, h or d, e.g. 30m or 24h")
            }
        }

        /// "90s", "30m", "24h", "7d" → seconds; nil when malformed or zero.
        static func seconds(_ text: String) -> UInt64? {
            guard let unit = text.last, let value = UInt64(text.dropLast()), value > 0 else { return nil }
            switch unit {
            case "s": return value
            case "m": return value * 60
            case "h": return value * 3600
            case "d": return value * 86_400
            default: return nil
            }
        }

        func run() async throws {
            let seconds = Self.seconds(ttl) ?? 86_400
            let created = try await cluster.withClient { try await $0.tokenCreate(role: role, ttlSeconds: seconds, maxUses: uses) }
            if quiet {
                print(created.token)
                return
            }
            switch cluster.output {
            case .json:
                try printJSON(TokenJSON(created.info, token: created.token))
            case .table:
                print(created.token)
                print("")
                print("id \(created.info.id), for \(created.info.role)s, expires \(TokenJSON.time(created.info.expiresAtMs))"
                    + (created.info.maxUses > 0 ? ", \(created.info.maxUses) use\(created.info.maxUses == 1 ? "" : "s")" : ""))
                print("This is the only time the whole token is shown; the cluster keeps just a hash of its secret.")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls", abstract: "List join tokens (never their secrets).", aliases: ["list"])

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let tokens = try await cluster.withClient { try await $0.tokenList() }
            switch cluster.output {
            case .json:
                try printJSON(tokens.map { TokenJSON($0, token: nil) })
            case .table:
                let now = UInt64(Date().timeIntervalSince1970 * 1000)
                var table = TextTable("ID", "ROLE", "CREATED", "EXPIRES", "USES LEFT", "STATE")
                for token in tokens {
                    let state = token.revoked ? "revoked" : token.expiresAtMs <= now ? "expired"
                        : (token.maxUses > 0 && token.used >= token.maxUses) ? "used up" : "valid"
                    table.append(
                        token.id, token.role, TokenJSON.time(token.createdAtMs), TokenJSON.time(token.expiresAtMs),
                        token.maxUses == 0 ? "unlimited" : "\(token.maxUses - min(token.used, token.maxUses)) of \(token.maxUses)",
                        state)
                }
                print(table.render())
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "Revoke a join token: joins with it are refused from now on.", aliases: ["rm"])

        @Argument(help: "The token's id (see `flotilla token ls`).")
        var id: String

        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            try await cluster.withClient { try await $0.tokenRevoke(id: id) }
            switch cluster.output {
            case .json: try printJSON(["revoked": id])
            case .table: print("join token \(id) revoked")
            }
        }
    }
}

/// `--output json` of a token.
struct TokenJSON: Encodable {
    let id: String
    let role: String
    let createdAt: String
    let expiresAt: String
    let used: UInt32
    let maxUses: UInt32
    let revoked: Bool
    let token: String?

    enum CodingKeys: String, CodingKey {
        case id, role, used, revoked, token
        case createdAt = "created_at"
        case expiresAt = "expires_at"
        case maxUses = "max_uses"
    }

    init(_ info: Flotilla_V1_TokenInfo, token: String?) {
        id = info.id
        role = info.role
        createdAt = Self.time(info.createdAtMs)
        expiresAt = Self.time(info.expiresAtMs)
        used = info.used
        maxUses = info.maxUses
        revoked = info.revoked
        self.token = token
    }

    /// RFC 3339 UTC, seconds.
    static func time(_ milliseconds: UInt64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }
}

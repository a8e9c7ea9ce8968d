import AdminClient
import ArgumentParser
import ClusterModel
import Foundation
import PKI
import Wire

/// The `flotilla` admin CLI. Exit status: 0 success, 1 an error the cluster (or the connection) reported,
/// 2 bad usage. See docs/cli.md.
@main
enum FlotillaMain {
    static func main() async {
        do {
            var command = try Flotilla.parseAsRoot(GlobalOptions.hoisted(Array(CommandLine.arguments.dropFirst())))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(status(for: error))
        }
    }

    /// Prints the error and maps it to the CLI contract's exit status.
    static func status(for error: any Error) -> Int32 {
        switch error {
        case let error as RPCError:
            printError(error.leaderAddress.map { "\(error.message) (leader: \($0))" } ?? error.message)
            return 1
        case let error as CLIError:
            printError(error.message)
            return 1
        case let error as PKIError:
            printError(error.message)
            return 1
        default:
            let code = Flotilla.exitCode(for: error)
            let message = Flotilla.fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            FileHandle.standardError.write(Data((message + "\n").utf8))
            // ArgumentParser reports usage errors as EX_USAGE (64); the contract says 2.
            return code == .validationFailure ? 2 : code.rawValue == 0 ? 0 : (error is ExitCode ? code.rawValue : 1)
        }
    }

    static func printError(_ message: String) {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    }
}

struct Flotilla: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla",
        abstract: "Drive a Flotilla cluster: nodes, services, tokens, logs and events.",
        discussion: """
            Finding the cluster: --controller HOST:PORT[,HOST:PORT...] or $FLOTILLA_CONTROLLER (default \
            127.0.0.1:7400); credentials: --credentials FILE or $FLOTILLA_CREDENTIALS (flotilla-controller \
            --init writes <data-dir>/admin.creds).
            Exit status: 0 success, 1 an error reported by the cluster or the connection, 2 bad usage.
            """,
        version: FlotillaVersion.current,
        subcommands: [StatusCommand.self, ServiceCommand.self, TaskCommand.self, ApplyCommand.self, NodeCommand.self, ImageCommand.self, LoadBalancerCommand.self, TokenCommand.self, ControllerCommand.self, VarCommand.self, SnapshotCommand.self, EventsCommand.self])
}

/// The CLI contract puts cluster options before the command (`flotilla --controller A status`), as Docker
/// does; ArgumentParser reads options only at the command that declares them. So options given before the
/// first command word are moved after the command line (before a `--` that ends its options, so they are
/// not taken for arguments), where every command's `ClusterOptions` reads them.
enum GlobalOptions {
    static let withValue: Set<String> = ["--controller", "--credentials", "--output"]

    static func hoisted(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            guard withValue.contains(name) else { break }
            leading.append(argument)
            if !argument.contains("="), index + 1 < arguments.count {
                leading.append(arguments[index + 1])
                index += 1
            }
            index += 1
        }
        var rest = Array(arguments[index...])
        rest.insert(contentsOf: leading, at: rest.firstIndex(of: "--") ?? rest.endIndex)
        return rest
    }
}

/// Options every command that talks to the cluster takes.
struct ClusterOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Controller addresses, comma-separated (env FLOTILLA_CONTROLLER; default 127.0.0.1:7400).",
        valueName: "host:port,..."))
    var controller: String?

    @Option(help: ArgumentHelp(
        "Admin credentials file (env FLOTILLA_CREDENTIALS).", valueName: "file"))
    var credentials: String?

    @Option(help: "Output format: table or json.")
    var output: OutputFormat = .table

    var controllerAddresses: [String] {
        let text = controller ?? ProcessInfo.processInfo.environment["FLOTILLA_CONTROLLER"] ?? "127.0.0.1:7400"
        return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func validate() throws {
        for address in controllerAddresses where HostPort.parse(address) == nil {
            throw ValidationError("controller address '\(address)' is not host:port")
        }
    }

    func loadCredentials() throws -> Credentials {
        guard let path = credentials ?? ProcessInfo.processInfo.environment["FLOTILLA_CREDENTIALS"] else {
            throw CLIError(
                "no credentials given: pass --credentials FILE or set FLOTILLA_CREDENTIALS (flotilla-controller --init wrote <data-dir>/admin.creds)")
        }
        return try Credentials.load(from: path)
    }

    /// Connects, runs `body`, and closes the connection whatever happens.
    func withClient<T: Sendable>(_ body: (AdminClient) async throws -> T) async throws -> T {
        let client = try await AdminClient.connect(to: controllerAddresses, credentials: try loadCredentials())
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// A failure the CLI itself detected, with the whole message for the user.
struct CLIError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

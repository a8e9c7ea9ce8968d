public import ArgumentParser
import ClusterModel
import Controller
import Foundation
public import Logging
import Metrics
import MetricsEndpoint
import PKI
import Prometheus
import Transport
import ServiceLifecycle
import Wire

@main
struct FlotillaController: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-controller",
        abstract: "Run a Flotilla controller: a member of the cluster's replicated control plane.",
        discussion: """
            Start the first controller of a new cluster with --init; it creates the cluster CA, its own \
            certificate, and admin credentials for the `flotilla` CLI at <data-dir>/admin.creds. Restart it \
            later with the same --data-dir (without --init) to serve the same cluster again.
            """,
        version: FlotillaVersion.current)

    @Option(name: .customLong("data-dir"), help: "Directory for the controller's keys and state (created with --init).")
    var dataDirectory: String

    @Option(help: "Address to serve the protocol on (host:port).")
    var listen: String = "0.0.0.0:7400"

    @Flag(help: "Create a new cluster in --data-dir (refused if it already holds one).")
    var `init` = false

    @Option(help: ArgumentHelp(
        "Join the cluster of these controllers (host:port, comma-separated); with --token on first start.",
        valueName: "host:port,..."))
    var join: String?

    @Option(help: ArgumentHelp(
        "A controller join token (printed by --init, or `flotilla token create --role controller`), for the first --join.",
        valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("Address other controllers and clients reach this one on (default: from --listen).", valueName: "host:port"))
    var advertise: String?

    @Option(help: ArgumentHelp(
        "Create a new one-member cluster in an empty --data-dir from a backup written by `flotilla snapshot save`.",
        valueName: "file"))
    var restore: String?

    @Option(name: .customLong("metrics-address"), help: ArgumentHelp(
        "Where to serve Prometheus metrics over plain HTTP (GET /metrics), or off.", valueName: "host:port|off"))
    var metricsAddress = "127.0.0.1:9464"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    var joinAddresses: [String] {
        (join ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func validate() throws {
        guard HostPort.parse(listen, allowingPortZero: true) != nil else {
            throw ValidationError("--listen \(listen) is not host:port (e.g. 0.0.0.0:7400)")
        }
        for address in joinAddresses where HostPort.parse(address) == nil {
            throw ValidationError("--join address '\(address)' is not host:port")
        }
        if let advertise, HostPort.parse(advertise) == nil {
            throw ValidationError("--advertise \(advertise) is not host:port")
        }
        if MetricsAddress(parsing: metricsAddress) == nil {
            throw ValidationError("--metrics-address \(metricsAddress) is not host:port (e.g. 127.0.0.1:9464) or off")
        }
        if [`init`, join != nil, restore != nil].filter({ $0 }).count > 1 {
            throw ValidationError("--init, --join and --restore each start a controller differently; pass only one of them")
        }
    }

    func run() async throws {
        ProcessLogging.bootstrap(level: logLevel)
        let logger = Logger(label: "flotilla.controller")
        let registry = PrometheusCollectorRegistry()
        let metricsFactory = FlotillaMetrics.factory(registry: registry)
        MetricsSystem.bootstrap(metricsFactory)
        let directory = ControllerDataDirectory(path: dataDirectory)
        do {
            var announceTokens: (@Sendable (String, String) -> Void)?
            if `init` {
                let created = try directory.initialize(addresses: [listen], now: Date())
                let dial = Self.dialable(advertise ?? listen)
                announceTokens = { agent, controller in
                    FileHandle.standardOutput.write(Data("""
                        Join tokens (valid 24 h; more with `flotilla token create`):
                          agent:      \(agent)
                          controller: \(controller)
                        Join an agent:      flotilla-agent --data-dir DIR --controller \(dial) --token \(agent)
                        Join a controller:  flotilla-controller --data-dir DIR --listen HOST:PORT --join \(dial) --token \(controller)

                        """.utf8))
                }
                // Written straight to the file descriptor (not print's buffer), so a pipe or log file gets
                // it before the server starts serving.
                FileHandle.standardOutput.write(Data("""
                    Initialized cluster \(created.clusterID); this controller is \(created.controllerID).
                    CA pin: sha256:\(created.caPin)
                    Admin credentials: \(created.adminCredentialsPath) (mode 0600)
                    Try: flotilla --controller \(Self.dialable(listen)) --credentials \(created.adminCredentialsPath) status

                    """.utf8))
            }
            if let restore {
                let restored = try directory.restore(from: restore, addresses: [listen], now: Date())
                FileHandle.standardOutput.write(Data("""
                    Restored cluster \(restored.clusterID) from \(restore); this controller is \(restored.controllerID), its only member.
                    Admin credentials: \(restored.adminCredentialsPath) (mode 0600; credentials from before the backup still work)

                    """.utf8))
            }
            if !joinAddresses.isEmpty && !directory.isInitialized {
                guard let token else {
                    throw ControllerError(
                        .invalidConfiguration,
                        "joining needs a controller join token: pass --token (printed by the first controller's --init, or `flotilla token create --role controller`)")
                }
                let parsed: JoinToken
                do {
                    parsed = try JoinToken(parsing: token)
                } catch let error as PKIError {
                    throw ControllerError(.invalidConfiguration, error.message)
                }
                let credentials: Credentials
                do {
                    credentials = try await NodeJoiner.join(
                        controllers: joinAddresses, token: parsed,
                        request: .init(role: .controller, advertiseAddress: advertise ?? Self.dialable(listen), version: FlotillaVersion.current),
                        logger: logger)
                } catch let error as RPCError {
                    throw ControllerError(.invalidConfiguration, "joining failed: \(error.message)")
                }
                try directory.adoptJoinCredentials(credentials)
                FileHandle.standardOutput.write(Data("Joined the cluster at \(joinAddresses.joined(separator: ",")) as controller \(credentials.identity.nodeID).\n".utf8))
            }
            let credentials = try directory.loadCredentials(addresses: [listen], now: Date())
            var configuration = ControllerConfiguration(
                dataDirectory: dataDirectory, listenAddress: listen, advertiseAddress: advertise,
                joinAddresses: joinAddresses, announceJoinTokens: announceTokens)
            configuration.metrics = metricsFactory
            let server = try await ControllerServer(configuration: configuration, credentials: credentials, logger: logger)
            let metrics = MetricsService(
                address: MetricsAddress(parsing: metricsAddress) ?? .off,
                exposition: MetricsExposition(registry: registry, collectors: [{ _ in server.refreshMetrics() }]),
                logger: logger)
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: metrics), .init(service: server)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            try await group.run()
        } catch let error as ControllerError {
            throw CleanError(message: error.message)
        }
    }

    /// The address a client on this machine would dial for a wildcard listen address.
    static func dialable(_ listen: String) -> String {
        guard let (host, port) = HostPort.parse(listen, allowingPortZero: true) else { return listen }
        return host == "0.0.0.0" || host == "::" ? "127.0.0.1:\(port)" : listen
    }
}

/// An error whose message is the whole story: printed as "error: <message>", exit status 1.
struct CleanError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

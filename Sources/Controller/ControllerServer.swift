import ClusterModel
public import Foundation
public import Logging
import NIOCore
public import PKI
public import ServiceLifecycle
public import Transport
import Wire

/// Everything a controller process is configured with.
public struct ControllerConfiguration: Sendable {
    public var dataDirectory: String
    /// host:port to listen on for the protocol (mTLS).
    public var listenAddress: String
    public var transport: TransportConfiguration

    public init(dataDirectory: String, listenAddress: String, transport: TransportConfiguration = .init()) {
        self.dataDirectory = dataDirectory
        self.listenAddress = listenAddress
        self.transport = transport
    }
}

/// The controller process: serves the protocol on its listen address until shut down gracefully.
/// Raft, the store and the control loops join it in later issues.
public final class ControllerServer: Service {
    public let configuration: ControllerConfiguration
    public let credentials: Credentials
    private let startedAt: ContinuousClock.Instant
    private let logger: Logger
    private let server: RPCServer

    /// Binds the listening socket, so a bad address fails before anything else starts.
    public init(configuration: ControllerConfiguration, credentials: Credentials, logger: Logger) async throws {
        guard let (host, port) = HostPort.parse(configuration.listenAddress, allowingPortZero: true) else {
            throw ControllerError(
                .invalidConfiguration, "--listen \(configuration.listenAddress) is not host:port (e.g. 0.0.0.0:7400)")
        }
        self.configuration = configuration
        self.credentials = credentials
        self.logger = logger
        let startedAt = ContinuousClock.now
        self.startedAt = startedAt
        var router = RPCRouter()
        DiagnosticsService.register(into: &router)
        AdminService(
            credentials: credentials, listenAddress: configuration.listenAddress, startedAt: startedAt
        ).register(into: &router)
        self.server = try await RPCServer.bind(
            host: host, port: port, tls: try TLSContexts.server(credentials: credentials), router: router,
            configuration: configuration.transport, logger: logger)
    }

    /// Where the server actually listens (the port is real even when 0 was asked for).
    public var localAddress: String {
        let address = server.localAddress
        return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }

    public func run() async throws {
        logger.info(
            "controller serving",
            metadata: ["controller.id": "\(credentials.identity.nodeID)", "listen": "\(localAddress)",
                       "cluster.id": "\(credentials.clusterID)"])
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: { [server] in
            server.beginGracefulShutdown()
        }
        logger.info("controller stopped")
    }

    /// Starts a graceful shutdown (tests; a process uses SIGTERM through its ServiceGroup).
    public func beginGracefulShutdown() {
        server.beginGracefulShutdown()
    }
}

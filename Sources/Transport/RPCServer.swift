public import ClusterModel
public import Logging
public import NIOCore
public import NIOPosix
public import NIOSSL
import Synchronization
import Wire

/// A listening protocol server: accepts TLS connections and runs each call's handler in a structured task.
///
/// Lifecycle: `bind` opens the socket (so tests learn the port), `run` serves until `beginGracefulShutdown`
/// (or the task is cancelled), then sends GOAWAY on every connection, lets in-flight calls finish within the
/// grace period, and returns.
public final class RPCServer: Sendable {
    public let localAddress: SocketAddress
    private let serverChannel: NIOAsyncChannel<NIOAsyncChannel<IncomingCall, Never>, Never>
    private let router: Mutex<RPCRouter>
    private let logger: Logger
    private let connections = Mutex(ConnectionRegistry())
    private let tls: CurrentTLS

    private struct ConnectionRegistry {
        var ports: [ObjectIdentifier: ConnectionPort] = [:]
        var shuttingDown = false
    }

    private init(
        serverChannel: NIOAsyncChannel<NIOAsyncChannel<IncomingCall, Never>, Never>, router: RPCRouter, tls: CurrentTLS, logger: Logger
    ) throws {
        self.serverChannel = serverChannel
        self.tls = tls
        self.router = Mutex(router)
        self.logger = logger
        guard let address = serverChannel.channel.localAddress else {
            throw RPCError(.internalError, "listening socket has no local address")
        }
        self.localAddress = address
    }

    /// Opens the listening socket. `port` 0 picks a free port (see `localAddress`).
    public static func bind(
        host: String, port: Int, tls: NIOSSLContext, router: RPCRouter,
        allowedPeerRoles: Set<NodeRole> = Set(NodeRole.certificateRoles),
        configuration: TransportConfiguration = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "flotilla.transport")
    ) async throws -> RPCServer {
        let holder = ServerHolder()
        let currentTLS = CurrentTLS(tls)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: currentTLS.current))
                    try sync.addHandler(ByteToMessageHandler(FrameToMessageDecoder(maxPayloadSize: configuration.maxFrameSize)))
                    let handler = ConnectionHandler(
                        role: .server, configuration: configuration,
                        identification: .certificate(allowedRoles: allowedPeerRoles),
                        eventLoop: channel.eventLoop, logger: logger)
                    try sync.addHandler(handler)
                    holder.server.withLock { $0 }?.register(channel: channel, port: ConnectionPort(handler: handler))
                    return try NIOAsyncChannel<IncomingCall, Never>(wrappingChannelSynchronously: channel)
                }
            }
        let server = try RPCServer(serverChannel: channel, router: router, tls: currentTLS, logger: logger)
        holder.server.withLock { $0 = server }
        return server
    }

    /// Serves until a graceful shutdown completes or the task is cancelled.
    public func run() async throws {
        try await withTaskCancellationHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await serverChannel.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask {
                            await self.serve(connection)
                        }
                    }
                }
            }
        } onCancel: {
            beginGracefulShutdown()
        }
    }

    private func serve(_ connection: NIOAsyncChannel<IncomingCall, Never>) async {
        let router = self.router.withLock { $0 }
        do {
            try await connection.executeThenClose { calls, _ in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await call in calls {
                            group.addTask { await router.serve(call) }
                        }
                    } catch {
                        // The connection failed; its handler already failed every call on it.
                    }
                }
            }
        } catch {
            logger.debug("connection ended with an error", metadata: ["error": "\(error)"])
        }
    }

    /// Serves new connections with `context` (a renewed certificate); open connections keep theirs.
    public func replaceTLS(_ context: NIOSSLContext) {
        tls.replace(context)
    }

    /// Replaces the methods served, for servers whose handlers need to know the bound port. Call before `run`.
    public func setRouter(_ router: RPCRouter) {
        self.router.withLock { $0 = router }
    }

    /// Stops accepting connections and calls; in-flight calls finish (within each connection's grace period).
    public func beginGracefulShutdown() {
        let ports = connections.withLock { registry -> [ConnectionPort] in
            registry.shuttingDown = true
            return Array(registry.ports.values)
        }
        serverChannel.channel.close(promise: nil)
        for port in ports { port.beginGracefulShutdown() }
    }

    fileprivate func register(channel: any Channel, port: ConnectionPort) {
        let key = ObjectIdentifier(channel)
        let shuttingDown = connections.withLock { registry in
            registry.ports[key] = port
            return registry.shuttingDown
        }
        if shuttingDown { port.beginGracefulShutdown() }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.connections.withLock { $0.ports.removeValue(forKey: key) }
        }
    }
}

/// Lets the channel initializer reach the server object that is created after `bind` returns.
private final class ServerHolder: Sendable {
    let server = Mutex<RPCServer?>(nil)
}

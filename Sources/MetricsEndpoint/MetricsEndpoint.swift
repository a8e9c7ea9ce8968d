public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// Limits of the /metrics server: a scrape is one small GET, so anything bigger or slower is cut off.
public struct MetricsEndpointConfiguration: Sendable {
    /// Connections served at once; more are closed on arrival.
    public var maxConnections = 16
    /// A connection's whole life (request in, exposition out); then it is closed.
    public var connectionTimeout = Duration.seconds(10)
    /// Request body bytes accepted (a GET has none); more gets 413 and the connection closes. The request
    /// head is bounded by NIO's parser (80 KiB), which answers 400 to a larger or malformed one.
    public var maxBodyBytes = 1_024

    public init() {}
}

/// A plain HTTP/1.1 server for Prometheus scrapes: `GET /metrics` answers the exposition; any other path is
/// 404, any other method 405, a malformed request 400 (NIO's parser). One request per connection (the
/// answer says `Connection: close`), so a slow or idle client holds nothing past `connectionTimeout`.
///
/// Bind with `bind`, then `run` until cancelled or a graceful shutdown.
public final class MetricsEndpoint: Service {
    private typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    private let server: NIOAsyncChannel<Connection, Never>
    private let exposition: MetricsExposition
    private let configuration: MetricsEndpointConfiguration
    private let logger: Logger
    private let open = Mutex(0)

    /// The port it listens on (the real one when 0 was asked for).
    public let port: Int

    private init(server: NIOAsyncChannel<Connection, Never>, exposition: MetricsExposition,
                 configuration: MetricsEndpointConfiguration, logger: Logger) {
        self.server = server
        self.exposition = exposition
        self.configuration = configuration
        self.logger = logger
        self.port = server.channel.localAddress?.port ?? 0
    }

    /// Binds the listening socket (throws when the address is taken or not local).
    public static func bind(
        host: String, port: Int, exposition: MetricsExposition, configuration: MetricsEndpointConfiguration = .init(),
        logger: Logger
    ) async throws -> MetricsEndpoint {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
        return MetricsEndpoint(server: server, exposition: exposition, configuration: configuration, logger: logger)
    }

    /// Serves until cancelled or a graceful shutdown; connections in progress finish (within their timeout).
    public func run() async throws {
        let channel = server.channel
        do {
            try await withTaskCancellationOrGracefulShutdownHandler {
                try await server.executeThenClose { connections in
                    await withDiscardingTaskGroup { group in
                        do {
                            for try await connection in connections {
                                guard admit() else {
                                    connection.channel.close(promise: nil)
                                    continue
                                }
                                group.addTask {
                                    await self.serve(connection)
                                    self.open.withLock { $0 -= 1 }
                                }
                            }
                        } catch {
                            logger.debug("metrics listener stopped accepting", metadata: ["error": "\(error)"])
                        }
                    }
                }
            } onCancelOrGracefulShutdown: {
                channel.close(promise: nil)
            }
        } catch is ChannelError {
            // Closed by the shutdown handler.
        }
    }

    private func admit() -> Bool {
        open.withLock { count in
            guard count < configuration.maxConnections else { return false }
            count += 1
            return true
        }
    }

    /// One connection: its request answered, or closed at the timeout.
    private func serve(_ connection: Connection) async {
        let timeout = configuration.connectionTimeout
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await connection.executeThenClose { inbound, _ in
                        try await self.answer(inbound, connection.channel)
                    }
                } catch {
                    // Malformed requests were answered 400 by NIO's error handler; resets need no answer.
                    self.logger.debug("metrics request failed", metadata: ["error": "\(error)"])
                }
            }
            group.addTask {
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                connection.channel.close(promise: nil)
            }
            _ = await group.next()
            group.cancelAll()
        }
    }

    /// Answers through `outbound` (the channel itself, not the async writer): the last write's future completes
    /// once the response is in the socket, so the close that follows cannot drop the end of a large exposition.
    private func answer(_ inbound: NIOAsyncChannelInboundStream<HTTPServerRequestPart>, _ outbound: any Channel) async throws {
        var head: HTTPRequestHead?
        var bodyBytes = 0
        for try await part in inbound {
            switch part {
            case .head(let requestHead):
                head = requestHead
            case .body(let chunk):
                bodyBytes += chunk.readableBytes
                if bodyBytes > configuration.maxBodyBytes {
                    try await respond(outbound, .payloadTooLarge, "a metrics request has no body\n")
                    return
                }
            case .end:
                guard let head else { return }
                try await respond(to: head, outbound)
                return
            }
        }
    }

    private func respond(to head: HTTPRequestHead, _ outbound: any Channel) async throws {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard head.method == .GET || head.method == .HEAD else {
            try await respond(outbound, .methodNotAllowed, "only GET is served here\n", extra: [("Allow", "GET, HEAD")])
            return
        }
        guard path == "/metrics" else {
            try await respond(outbound, .notFound, "not found; metrics are at /metrics\n")
            return
        }
        let body = await exposition.render()
        try await respond(
            outbound, .ok, body, contentType: "text/plain; version=0.0.4; charset=utf-8", includeBody: head.method == .GET)
    }

    private func respond(
        _ outbound: any Channel, _ status: HTTPResponseStatus, _ text: String,
        extra: [(String, String)] = []
    ) async throws {
        try await respond(outbound, status, Array(text.utf8), contentType: "text/plain; charset=utf-8", extra: extra)
    }

    private func respond(
        _ outbound: any Channel, _ status: HTTPResponseStatus, _ body: [UInt8],
        contentType: String, extra: [(String, String)] = [], includeBody: Bool = true
    ) async throws {
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.count)"), ("Connection", "close")])
        headers.add(contentsOf: extra)
        outbound.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)), promise: nil)
        if includeBody { outbound.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        try await outbound.writeAndFlush(HTTPServerResponsePart.end(nil))
    }
}

extension MetricsEndpoint {
    /// Serves `exposition` at `address` until cancelled or a graceful shutdown. A bind failure is logged, not
    /// thrown: the process goes on without metrics (and this waits for the shutdown like a running server).
    public static func serve(
        at address: MetricsAddress, exposition: MetricsExposition, logger: Logger
    ) async {
        guard case .listen(let host, let port) = address else { return await waitForShutdown() }
        let endpoint: MetricsEndpoint
        do {
            endpoint = try await bind(host: host, port: port, exposition: exposition, logger: logger)
        } catch {
            logger.error(
                "metrics endpoint not serving: its address could not be bound; pass a free --metrics-address, or off",
                metadata: ["address": "\(host):\(port)", "error": "\(error)"])
            return await waitForShutdown()
        }
        logger.info("metrics served", metadata: ["address": "http://\(host):\(endpoint.port)/metrics"])
        do {
            try await endpoint.run()
        } catch {
            logger.error("metrics endpoint stopped", metadata: ["error": "\(error)"])
            await waitForShutdown()
        }
    }

    /// Returns at a graceful shutdown or cancellation, so a task group whose first finished task ends the
    /// process does not end because metrics are off.
    private static func waitForShutdown() async {
        try? await gracefulShutdown()
    }
}

/// `MetricsEndpoint.serve` as a `Service`, for a `ServiceGroup`.
public struct MetricsService: Service {
    public let address: MetricsAddress
    public let exposition: MetricsExposition
    public let logger: Logger

    public init(address: MetricsAddress, exposition: MetricsExposition, logger: Logger) {
        self.address = address
        self.exposition = exposition
        self.logger = logger
    }

    public func run() async {
        await MetricsEndpoint.serve(at: address, exposition: exposition, logger: logger)
    }
}

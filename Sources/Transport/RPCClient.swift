public import ClusterModel
public import Logging
public import NIOCore
public import NIOPosix
public import NIOSSL
public import SwiftProtobuf
public import Wire
import PKI
import Synchronization

/// Per-call options.
public struct CallOptions: Sendable {
    /// How long the caller waits; the server is told and cancels its work when it passes. nil: no deadline.
    public var timeout: Duration?
    /// Key/value pairs sent with the request.
    public var metadata: [String: String]

    public init(timeout: Duration? = nil, metadata: [String: String] = [:]) {
        self.timeout = timeout
        self.metadata = metadata
    }
}

/// Responses streamed from a server.
public struct ResponseStream<Response: SwiftProtobuf.Message>: AsyncSequence, Sendable {
    public typealias Element = Response
    let inbox: StreamInbox

    public struct AsyncIterator: AsyncIteratorProtocol {
        let inbox: StreamInbox
        public mutating func next() async throws -> Response? {
            guard let bytes = try await inbox.next() else { return nil }
            return try decodeMessage(Response.self, from: bytes)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbox: inbox) }
}

/// Sends a client's requests on a streaming call. `write` waits while the server is not reading.
public struct RequestWriter<Request: SwiftProtobuf.Message>: Sendable {
    let handle: ClientStreamHandle
    let connection: ConnectionPort

    public func write(_ request: Request) async throws {
        let bytes = try PayloadCodec.encode(request, allocator: sharedAllocator)
        try await connection.send(bytes, handle: handle, endStream: false).get()
    }

    /// Tells the server no more requests follow.
    public func finish() {
        connection.halfClose(handle: handle)
    }
}

/// One protocol connection to a server, with typed calls multiplexed over it.
///
/// The connection is ready when `connect` returns (TLS done, HELLOs exchanged, the server's role checked).
/// Calls fail with UNAVAILABLE once the connection is gone; reconnecting is the caller's choice.
public final class RPCClient: Sendable {
    /// The server, as identified by its certificate.
    public let peer: PeerIdentity
    private let channel: any Channel
    private let port: ConnectionPort
    private let reportThreshold: Int

    private init(peer: PeerIdentity, channel: any Channel, port: ConnectionPort, configuration: TransportConfiguration) {
        self.peer = peer
        self.channel = channel
        self.port = port
        self.reportThreshold = max(1, configuration.initialStreamWindow / 4)
    }

    /// Connects, completes TLS and the HELLO handshake, and checks the server's role.
    public static func connect(
        host: String, port: Int, tls: NIOSSLContext,
        expectedServerRoles: Set<NodeRole> = [.controller],
        configuration: TransportConfiguration = .init(),
        connectTimeout: Duration = .seconds(5),
        pinnedCA: [UInt8]? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "flotilla.transport")
    ) async throws -> RPCClient {
        let pinFailure = PinFailure()
        do {
            return try await connectOrThrow(
                host: host, port: port, tls: tls, expectedServerRoles: expectedServerRoles,
                configuration: configuration, connectTimeout: connectTimeout, pinnedCA: pinnedCA, pinFailure: pinFailure,
                group: group, logger: logger)
        } catch {
            // A pin mismatch surfaces from TLS as a bare handshake failure; say what it was.
            if let failure = pinFailure.error.withLock({ $0 }) {
                throw RPCError(failure.code == .wrongCluster ? .permissionDenied : .unauthenticated, "\(host):\(port): \(failure.message)")
            }
            throw ConnectionFailure.describe(error, host: host, port: port)
        }
    }

    private static func connectOrThrow(
        host: String, port: Int, tls: NIOSSLContext, expectedServerRoles: Set<NodeRole>,
        configuration: TransportConfiguration, connectTimeout: Duration, pinnedCA: [UInt8]?, pinFailure: PinFailure,
        group: any EventLoopGroup, logger: Logger
    ) async throws -> RPCClient {
        let (channel, connectionPort, ready) = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(TimeAmount(connectTimeout))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let pinnedCA {
                        // A joiner has no trust store yet: the token's CA pin is the trust.
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil) { certificates, promise in
                            do {
                                let chain = try certificates.map { try $0.toDERBytes() }
                                _ = try Joining.verifyServerChain(chain, pin: pinnedCA)
                                promise.succeed(.certificateVerified)
                            } catch {
                                pinFailure.error.withLock {
                                    $0 = (error as? PKIError) ?? PKIError(code: .invalidCertificate, message: "the server's certificate chain does not parse: \(error)")
                                }
                                promise.succeed(.failed)
                            }
                        })
                    } else {
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                    }
                    try sync.addHandler(ByteToMessageHandler(FrameToMessageDecoder(maxPayloadSize: configuration.maxFrameSize)))
                    let handler = ConnectionHandler(
                        role: .client, configuration: configuration,
                        identification: .certificate(allowedRoles: expectedServerRoles),
                        eventLoop: channel.eventLoop, logger: logger)
                    try sync.addHandler(handler)
                    return (channel as any Channel, ConnectionPort(handler: handler), handler.ready.futureResult)
                }
            }
        do {
            let peer = try await ready.get()
            return RPCClient(peer: peer, channel: channel, port: connectionPort, configuration: configuration)
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    /// Closes the connection; calls still in flight fail with UNAVAILABLE.
    public func close() async {
        try? await channel.close()
    }

    /// Completes when the connection is closed, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    // MARK: - Calls

    private func start(_ name: String, message: ByteBuffer?, endStream: Bool, options: CallOptions) -> ClientStreamHandle {
        let handle = ClientStreamHandle(port: port, reportThreshold: reportThreshold)
        var head = Flotilla_V1_RequestHead()
        head.method = name
        head.metadata = options.metadata
        port.open(handle: handle, head: head, message: message, endStream: endStream, timeout: options.timeout.map(TimeAmount.init))
        return handle
    }

    /// One request, one response.
    public func unary<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, options: CallOptions = .init()
    ) async throws -> Response {
        let body = try PayloadCodec.encode(request, allocator: sharedAllocator)
        let handle = start(method.name, message: body, endStream: true, options: options)
        let port = self.port
        return try await withTaskCancellationHandler {
            guard let bytes = try await handle.inbox.next() else {
                throw RPCError(.internalError, "\(method.name) ended with OK but sent no response")
            }
            // The status follows the response; an error status after a response still fails the call.
            while try await handle.inbox.next() != nil {}
            return try decodeMessage(Response.self, from: bytes)
        } onCancel: {
            port.cancel(handle: handle, reason: RPCError(.cancelled, "the caller cancelled the call"))
        }
    }

    /// One request, a stream of responses, read inside `body`. Leaving `body` early cancels the call.
    public func serverStreaming<Request, Response, Result: Sendable>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, options: CallOptions = .init(),
        _ body: (ResponseStream<Response>) async throws -> Result
    ) async throws -> Result {
        let message = try PayloadCodec.encode(request, allocator: sharedAllocator)
        let handle = start(method.name, message: message, endStream: true, options: options)
        return try await scoped(handle) { try await body(ResponseStream(inbox: handle.inbox)) }
    }

    /// Streams both ways inside `body`: write requests (and `finish()`), read responses. Leaving `body`
    /// before the server ended the call cancels it.
    public func bidirectional<Request, Response, Result: Sendable>(
        _ method: MethodDescriptor<Request, Response>, options: CallOptions = .init(),
        _ body: (RequestWriter<Request>, ResponseStream<Response>) async throws -> Result
    ) async throws -> Result {
        let handle = start(method.name, message: nil, endStream: false, options: options)
        let writer = RequestWriter<Request>(handle: handle, connection: port)
        return try await scoped(handle) { try await body(writer, ResponseStream(inbox: handle.inbox)) }
    }

    private func scoped<Result: Sendable>(
        _ handle: ClientStreamHandle, _ body: () async throws -> Result
    ) async throws -> Result {
        let port = self.port
        let cancelled = RPCError(.cancelled, "the caller stopped reading the call")
        do {
            let result = try await withTaskCancellationHandler {
                try await body()
            } onCancel: {
                port.cancel(handle: handle, reason: RPCError(.cancelled, "the caller cancelled the call"))
            }
            if !handle.inbox.isFinished { port.cancel(handle: handle, reason: cancelled) }
            return result
        } catch {
            port.cancel(handle: handle, reason: cancelled)
            throw error
        }
    }
}

/// Why a pinned-CA check refused the server, kept for the error the caller sees.
final class PinFailure: Sendable {
    let error = Mutex<PKIError?>(nil)
}

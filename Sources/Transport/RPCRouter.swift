public import ClusterModel
public import NIOCore
public import SwiftProtobuf
public import Wire

/// What a handler knows about the call it serves.
public struct ServerContext: Sendable {
    /// Who called, from the certificate the connection was authenticated with.
    public let peer: PeerIdentity
    public let method: String
    /// When the caller stops waiting; nil without a deadline. The handler is cancelled when it passes.
    public let deadline: NIODeadline?
    public let metadata: [String: String]
    /// The caller's IP address, when the connection has one.
    public let remoteAddress: String?
    let lifecycle: CallLifecycle

    /// True once the caller cancelled, the deadline passed or the connection died.
    public var isCancelled: Bool { lifecycle.isCancelled }
}

/// Messages a client streams to a server handler.
public struct RequestStream<Request: SwiftProtobuf.Message>: AsyncSequence, Sendable {
    public typealias Element = Request
    let inbox: StreamInbox

    public struct AsyncIterator: AsyncIteratorProtocol {
        let inbox: StreamInbox
        public mutating func next() async throws -> Request? {
            guard let bytes = try await inbox.next() else { return nil }
            return try decodeMessage(Request.self, from: bytes)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbox: inbox) }
}

/// Sends a server handler's responses. `write` waits while the client is not reading (flow control).
public struct ResponseWriter<Response: SwiftProtobuf.Message>: Sendable {
    let streamID: UInt32
    let connection: ConnectionPort

    public func write(_ response: Response) async throws {
        let bytes = try PayloadCodec.encode(response, allocator: sharedAllocator)
        try await connection.send(bytes, streamID: streamID, endStream: false).get()
    }
}

let sharedAllocator = ByteBufferAllocator()

func decodeMessage<M: SwiftProtobuf.Message>(_ type: M.Type, from bytes: ByteBuffer) throws -> M {
    do {
        return try PayloadCodec.decode(type, from: bytes)
    } catch {
        throw RPCError(.invalidArgument, "message does not decode as \(M.protoMessageName): \(error)")
    }
}

/// The methods a server serves, and the one place where the caller's role is checked against the method's.
public struct RPCRouter: Sendable {
    struct Route: Sendable {
        let allowedRoles: Set<NodeRole>
        let run: @Sendable (IncomingCall, ServerContext) async throws -> ByteBuffer?
    }

    private var routes: [String: Route] = [:]
    /// Asked about every caller before any method: a refusal (e.g. a removed node's certificate, still valid
    /// cryptographically but revoked by the cluster) ends the call with that error.
    public var admission: (@Sendable (PeerIdentity) -> RPCError?)?

    public init() {}

    /// Serves a unary method.
    public mutating func register<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        precondition(method.kind == .unary, "\(method.name) is not unary")
        routes[method.name] = Route(allowedRoles: method.allowedRoles) { call, context in
            guard let bytes = try await call.inbox.next() else {
                throw RPCError(.invalidArgument, "\(method.name) is unary but the call carried no request message")
            }
            let request = try decodeMessage(Request.self, from: bytes)
            let response = try await handler(request, context)
            return try PayloadCodec.encode(response, allocator: sharedAllocator)
        }
    }

    /// Serves a server-streaming method.
    public mutating func register<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (Request, ResponseWriter<Response>, ServerContext) async throws -> Void
    ) {
        precondition(method.kind == .serverStreaming, "\(method.name) is not server-streaming")
        routes[method.name] = Route(allowedRoles: method.allowedRoles) { call, context in
            guard let bytes = try await call.inbox.next() else {
                throw RPCError(.invalidArgument, "\(method.name) needs a request message")
            }
            let request = try decodeMessage(Request.self, from: bytes)
            try await handler(request, ResponseWriter(streamID: call.streamID, connection: call.connection), context)
            return nil
        }
    }

    /// Serves a bidirectional-streaming (or client-streaming) method.
    public mutating func register<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ handler: @escaping @Sendable (RequestStream<Request>, ResponseWriter<Response>, ServerContext) async throws -> Void
    ) {
        precondition(method.kind == .bidirectionalStreaming, "\(method.name) is not bidirectional")
        routes[method.name] = Route(allowedRoles: method.allowedRoles) { call, context in
            try await handler(
                RequestStream(inbox: call.inbox),
                ResponseWriter(streamID: call.streamID, connection: call.connection), context)
            return nil
        }
    }

    /// Runs one call to its end: routes it, checks the role, runs the handler under the call's cancellation,
    /// and sends the status.
    func serve(_ call: IncomingCall) async {
        guard let route = routes[call.method] else {
            return call.connection.finish(
                streamID: call.streamID, lastMessage: nil,
                status: Flotilla_V1_Status(RPCError(.unimplemented, "this server has no method \(call.method)")))
        }
        if let refusal = admission?(call.peer) {
            return call.connection.finish(streamID: call.streamID, lastMessage: nil, status: Flotilla_V1_Status(refusal))
        }
        guard route.allowedRoles.contains(call.peer.role) else {
            let allowed = route.allowedRoles.map(\.rawValue).sorted().joined(separator: " or ")
            return call.connection.finish(
                streamID: call.streamID, lastMessage: nil,
                status: Flotilla_V1_Status(RPCError(
                    .permissionDenied,
                    "\(call.method) may be called by \(allowed) only; your certificate identifies \(call.peer)")))
        }
        let context = ServerContext(
            peer: call.peer, method: call.method, deadline: call.deadline, metadata: call.metadata,
            remoteAddress: call.remoteAddress, lifecycle: call.lifecycle)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    let last = try await route.run(call, context)
                    call.connection.finish(streamID: call.streamID, lastMessage: last, status: .ok)
                } catch let error as RPCError {
                    call.connection.finish(streamID: call.streamID, lastMessage: nil, status: Flotilla_V1_Status(error))
                } catch is CancellationError {
                    call.connection.finish(
                        streamID: call.streamID, lastMessage: nil,
                        status: Flotilla_V1_Status(RPCError(.cancelled, "the call was cancelled")))
                } catch {
                    call.connection.finish(
                        streamID: call.streamID, lastMessage: nil,
                        status: Flotilla_V1_Status(RPCError(.unknown, "\(call.method) failed: \(error)")))
                }
                call.lifecycle.complete(.handlerFinished)
            }
            // Cancels the handler when the call is cancelled by the client, its deadline or a dead connection.
            if await call.lifecycle.wait() == .cancelled {
                group.cancelAll()
            }
        }
    }
}

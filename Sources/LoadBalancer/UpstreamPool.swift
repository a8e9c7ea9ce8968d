import Balancing
import NIOCore
import NIOHTTP1
import NIOPosix

/// Idle keep-alive connections to backends, per backend, on one event loop (HTTP mode). A connection goes back
/// after a complete response that allows reuse; one the backend closes leaves by itself.
final class UpstreamPool {
    private var idle: [String: [UpstreamHandler]] = [:]
    /// Idle connections kept per backend; more are closed when they come back.
    let maxIdlePerBackend = 512

    func take(for backendID: String) -> UpstreamHandler? {
        while let connection = idle[backendID]?.popLast() {
            if connection.isUsable { return connection }
        }
        return nil
    }

    func park(_ connection: UpstreamHandler) {
        let id = connection.backend.backend.id
        guard connection.isUsable, connection.backend.inTable, connection.backend.backend.weight > 0,
              (idle[id]?.count ?? 0) < maxIdlePerBackend
        else {
            connection.close()
            return
        }
        idle[id, default: []].append(connection)
    }

    func remove(_ connection: UpstreamHandler) {
        let id = connection.backend.backend.id
        idle[id]?.removeAll { $0 === connection }
    }

    /// Closes the idle connections of backends not in `keep` (removed or draining).
    func closeAll(except keep: Set<String>) {
        for (id, connections) in idle where !keep.contains(id) {
            idle[id] = nil
            for connection in connections { connection.close() }
        }
    }
}

/// The receiving end of one upstream HTTP/1.1 connection.
protocol UpstreamExchange: AnyObject {
    var clientCanTakeWrites: Bool { get }
    func upstream(_ connection: UpstreamHandler, received part: HTTPClientResponsePart)
    func upstreamClosed(_ connection: UpstreamHandler)
    func upstreamReadComplete(_ connection: UpstreamHandler)
    func upstreamBecameWritable(_ connection: UpstreamHandler)
}

/// One connection to a backend (HTTP mode): carries one request at a time for whichever client exchange holds it.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let backend: BackendState
    weak var exchange: (any UpstreamExchange)?
    weak var pool: UpstreamPool?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var closed = false
    /// A placeholder while the connection is being made.
    var isConnecting = false
    /// False once the backend said `Connection: close` or spoke HTTP/1.0 without keep-alive.
    var reusable = true

    var isUsable: Bool { !closed && reusable && context != nil }

    init(backend: BackendState) { self.backend = backend }

    /// Connects to `backend` on `loop` with an HTTP/1.1 client pipeline; `completion` runs on `loop`.
    static func connect(to backend: BackendState, on loop: any EventLoop, timeoutMillis: Int64, pool: UpstreamPool,
                        completion: @escaping (Result<UpstreamHandler, any Error>) -> Void) {
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: backend.backend.host, port: backend.backend.port)
        } catch {
            completion(.failure(error))
            return
        }
        ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(timeoutMillis))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    let handler = UpstreamHandler(backend: backend)
                    handler.pool = pool
                    do {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(handler)
                        completion(.success(handler))
                    } catch {
                        channel.close(promise: nil)
                        completion(.failure(error))
                    }
                case .failure(let error):
                    completion(.failure(error))
                }
            }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .head(let head) = part, !head.isKeepAlive { reusable = false }
        exchange?.upstream(self, received: part)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        pool?.remove(self)
        let exchange = self.exchange
        self.exchange = nil
        exchange?.upstreamClosed(self)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete(self)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { exchange?.upstreamBecameWritable(self) }
    }

    func read(context: ChannelHandlerContext) {
        if exchange?.clientCanTakeWrites ?? true { context.read() } else { pendingRead = true }
    }

    /// The client can take writes again: resume reading the response.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func write(_ part: HTTPClientRequestPart) {
        context?.write(wrapOutboundOut(part), promise: nil)
    }

    func flush() { context?.flush() }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func close() {
        closed = true
        context?.close(promise: nil)
    }
}

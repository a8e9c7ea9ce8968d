import Balancing
import NIOCore
import NIOPosix

/// One connection to a backend (HTTP mode), carrying one request at a time for whichever client exchange holds
/// it; between requests it waits in its backend's slot. It moves raw bytes: the client's handler writes the
/// request and reads the response through it.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let backend: BackendState
    let slot: BackendSlot
    /// The client exchange using it; nil while it is idle. Cleared by both sides when they part (so the
    /// reference cycle lasts only as long as the exchange).
    var exchange: HTTPFrontendHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var closed = false
    /// A placeholder while the connection is being made.
    var isConnecting = false
    private(set) var isWritable = true

    var isUsable: Bool { !closed && context != nil }

    init(backend: BackendState, slot: BackendSlot) {
        self.backend = backend
        self.slot = slot
    }

    /// Connects to `backend` on `loop`; `completion` runs on `loop`.
    static func connect(to backend: BackendState, slot: BackendSlot, on loop: any EventLoop, timeoutMillis: Int64,
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
                    slot.stats.connections &+= 1
                    let handler = UpstreamHandler(backend: backend, slot: slot)
                    do {
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
        if let exchange {
            exchange.upstreamRead(self, unwrapInboundIn(data))
        } else {
            // Bytes on an idle connection (a late answer, a 408 before closing): it can't carry a request.
            close()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstreamReadComplete(self)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        slot.remove(self)
        let exchange = self.exchange
        self.exchange = nil
        exchange?.upstreamClosed(self)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        if isWritable { exchange?.upstreamBecameWritable(self) }
    }

    func read(context: ChannelHandlerContext) {
        if exchange?.clientWritable ?? true { context.read() } else { pendingRead = true }
    }

    /// The client can take writes again: resume reading the response.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func writeAndFlush(_ bytes: ByteBuffer) {
        context?.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() { context?.flush() }

    func close() {
        closed = true
        context?.close(promise: nil)
    }
}

/// One backend as one event loop's service sees it: its counters and (HTTP mode) its idle keep-alive
/// connections. Found once per request or connection, then used directly.
final class BackendSlot {
    let state: BackendState
    var stats: BackendStats
    /// False once the backend left the table (or the service retired): nothing more is pooled here.
    var live = true
    private var idle: [UpstreamHandler] = []
    /// Idle connections kept; more are closed when they come back.
    static let maxIdle = 512

    init(state: BackendState) {
        self.state = state
        stats = BackendStats(id: state.backend.id, address: "\(state.backend.host):\(state.backend.port)",
                             weight: state.backend.weight)
    }

    /// An idle connection to reuse, most recently parked first (the warmest, least likely closed by the backend).
    func takeIdle() -> UpstreamHandler? {
        while let connection = idle.popLast() {
            if connection.isUsable { return connection }
        }
        return nil
    }

    /// Keeps a connection whose exchange ended cleanly, or closes it if it can't be reused here.
    func park(_ connection: UpstreamHandler) {
        guard live, connection.isUsable, state.inTable, state.backend.weight > 0, idle.count < Self.maxIdle else {
            connection.close()
            return
        }
        idle.append(connection)
    }

    func remove(_ connection: UpstreamHandler) {
        if let index = idle.lastIndex(where: { $0 === connection }) { idle.remove(at: index) }
    }

    /// Closes every idle connection.
    func closeIdle() {
        let connections = idle
        idle = []
        for connection in connections { connection.close() }
    }
}

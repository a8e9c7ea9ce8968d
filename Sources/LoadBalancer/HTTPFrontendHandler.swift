import Balancing
import NIOCore
import NIOHTTP1

/// One client's HTTP/1.1 keep-alive connection: every request is balanced on its own and sent over a pooled
/// upstream connection. A request whose backend cannot be reached goes to another; an idempotent one whose
/// upstream connection fails or times out before the response starts is replayed on another (its body is kept
/// up to `replayLimit` for that). When nothing can answer, the client gets a clear 502, 503 or 504.
final class HTTPFrontendHandler: ChannelDuplexHandler, UpstreamExchange {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Request bodies up to this size are kept so the request can be replayed on another backend.
    static let replayLimit = 64 * 1024

    private let service: LoopService
    private var context: ChannelHandlerContext?
    private var clientIP = ""
    private var clientHash: UInt64 = 0

    // The request in flight (the server pipeline hands over one request at a time).
    private var head: HTTPRequestHead?
    private var body: [ByteBuffer] = []
    private var bodyBytes = 0
    private var requestEnded = false
    /// The whole body so far is in `body`; false once it outgrew the replay limit and went out.
    private var replayable = true
    private var clientKeepAlive = true
    private var tried: [BackendState] = []
    private var backend: BackendState?
    private var upstream: UpstreamHandler?
    private var attempt = 0
    private var responseStarted = false
    private var timeout: Scheduled<Void>?
    private var dispatchedMicros: UInt64 = 0
    private var pendingClientRead = false

    init(service: LoopService) { self.service = service }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientIP = context.channel.remoteAddress?.ipAddress ?? ""
        clientHash = ClientHash.of(clientIP.utf8)
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: From the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            begin(requestHead)
            dispatch()
        case .body(let bytes):
            bodyBytes += bytes.readableBytes
            if let upstream, !upstream.isConnecting {
                upstream.write(.body(.byteBuffer(bytes)))
                if replayable { body.append(bytes) }
                if bodyBytes > Self.replayLimit { replayable = false; body.removeAll() }
            } else {
                // Held until an upstream connection is ready (reads pause past the replay limit).
                body.append(bytes)
                if bodyBytes > Self.replayLimit { replayable = false }
            }
        case .end:
            requestEnded = true
            if let upstream, !upstream.isConnecting {
                upstream.write(.end(nil))
                upstream.flush()
                armTimeout()
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        upstream?.flush()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if let upstream, !upstream.isConnecting, !upstream.isWritable {
            pendingClientRead = true
        } else if head != nil, upstream == nil || upstream!.isConnecting, bodyBytes > Self.replayLimit {
            pendingClientRead = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { upstream?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            // Idle between requests; a request in flight is bounded by the request timeout instead.
            if head == nil { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if let upstream {
            // The client left mid-exchange: that upstream connection is in an unknown state.
            upstream.exchange = nil
            upstream.close()
            self.upstream = nil
        }
        if let backend {
            service.balancer.closed(backend)
            self.backend = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Choosing a backend

    private func begin(_ requestHead: HTTPRequestHead) {
        head = requestHead
        body = []
        bodyBytes = 0
        requestEnded = false
        replayable = true
        clientKeepAlive = requestHead.isKeepAlive
        tried = []
        responseStarted = false
    }

    private func dispatch() {
        guard let context else { return }
        attempt += 1
        let thisAttempt = attempt
        guard !service.retired,
              let chosen = service.balancer.pick(clientHash: clientHash, nowMillis: Clock.nowMillis(), avoiding: tried)
        else {
            respondError(tried.isEmpty ? .serviceUnavailable : .badGateway,
                         tried.isEmpty ? "no backend is available for \(service.name)" : "no backend of \(service.name) could be reached")
            return
        }
        backend = chosen
        service.balancer.opened(chosen)
        service.count(chosen) { $0.requests += 1 }
        dispatchedMicros = Clock.nowMicros()
        if let pooled = service.pool.take(for: chosen.backend.id) {
            attach(pooled)
            return
        }
        let placeholder = UpstreamHandler(backend: chosen)
        placeholder.isConnecting = true
        upstream = placeholder
        UpstreamHandler.connect(to: chosen, on: context.eventLoop, timeoutMillis: service.settings.connectTimeoutMillis,
                                pool: service.pool) { result in
            guard self.attempt == thisAttempt, self.context != nil else {
                if case .success(let connection) = result { self.service.pool.park(connection) }
                return
            }
            switch result {
            case .success(let connection): self.attach(connection)
            case .failure: self.attemptFailed(nothingSent: true)
            }
        }
    }

    private func attach(_ connection: UpstreamHandler) {
        guard let head else { return }
        upstream = connection
        connection.exchange = self
        var upstreamHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: head.headers)
        HopByHop.strip(&upstreamHead.headers)
        if let existing = upstreamHead.headers.first(name: "x-forwarded-for") {
            upstreamHead.headers.replaceOrAdd(name: "x-forwarded-for", value: "\(existing), \(clientIP)")
        } else {
            upstreamHead.headers.add(name: "x-forwarded-for", value: clientIP)
        }
        upstreamHead.headers.replaceOrAdd(name: "x-forwarded-proto", value: "http")
        connection.write(.head(upstreamHead))
        for part in body { connection.write(.body(.byteBuffer(part))) }
        if !replayable { body.removeAll() }
        if requestEnded {
            connection.write(.end(nil))
            armTimeout()
        }
        connection.flush()
        if pendingClientRead, connection.isWritable, let context {
            pendingClientRead = false
            context.read()
        }
    }

    private func armTimeout() {
        guard let context else { return }
        timeout?.cancel()
        let thisAttempt = attempt
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(service.settings.requestTimeoutMillis)) {
            guard self.attempt == thisAttempt, !self.responseStarted else { return }
            self.responseTimedOut()
        }
    }

    private var isIdempotent: Bool {
        switch head?.method {
        case .GET?, .HEAD?, .PUT?, .DELETE?, .OPTIONS?, .TRACE?: true
        default: false
        }
    }

    /// This attempt's backend failed (refused, reset, timed out): it counts against it, and it is not tried
    /// again for this request.
    private func abandonAttempt() -> BackendState? {
        timeout?.cancel()
        guard let failed = backend else { return nil }
        if let upstream {
            upstream.exchange = nil
            upstream.close()
        }
        backend = nil
        upstream = nil
        service.balancer.closed(failed)
        service.balancer.failed(failed, nowMillis: Clock.nowMillis())
        service.count(failed) { $0.errors += 1 }
        tried.append(failed)
        return failed
    }

    private func attemptFailed(nothingSent: Bool) {
        guard let failed = abandonAttempt() else { return }
        let replay = nothingSent || (isIdempotent && replayable)
        if replay, tried.count <= service.settings.retries, !responseStarted {
            service.count(failed) { $0.retries += 1 }
            dispatch()
        } else if nothingSent {
            respondError(.badGateway, "no backend of \(service.name) could be reached (\(tried.count) tried)")
        } else {
            respondError(.badGateway, "the backend of \(service.name) failed before answering")
        }
    }

    private func responseTimedOut() {
        let waited = service.settings.requestTimeoutMillis
        guard let failed = abandonAttempt() else { return }
        if isIdempotent, replayable, tried.count <= service.settings.retries {
            service.count(failed) { $0.retries += 1 }
            dispatch()
        } else {
            respondError(.gatewayTimeout, "the backend of \(service.name) did not answer within \(waited) ms")
        }
    }

    // MARK: From the backend

    var clientCanTakeWrites: Bool { context?.channel.isWritable ?? false }

    func upstream(_ connection: UpstreamHandler, received part: HTTPClientResponsePart) {
        guard connection === upstream, let context, let backend else { return }
        switch part {
        case .head(let responseHead):
            if responseHead.status.code < 200 { return }  // informational: the final head follows
            timeout?.cancel()
            responseStarted = true
            service.count(backend) { $0.latency.record(micros: Clock.nowMicros() &- self.dispatchedMicros) }
            if [502, 503, 504].contains(responseHead.status.code) {
                service.balancer.failed(backend, nowMillis: Clock.nowMillis())
            } else {
                service.balancer.succeeded(backend, nowMillis: Clock.nowMillis())
            }
            var clientHead = HTTPResponseHead(version: head?.version ?? .http1_1, status: responseHead.status,
                                              headers: responseHead.headers)
            HopByHop.strip(&clientHead.headers)
            if !clientKeepAlive { clientHead.headers.replaceOrAdd(name: "connection", value: "close") }
            else if clientHead.version == .http1_0 { clientHead.headers.replaceOrAdd(name: "connection", value: "keep-alive") }
            context.write(wrapOutboundOut(.head(clientHead)), promise: nil)
        case .body(let bytes):
            let count = UInt64(bytes.readableBytes)
            service.count(backend) { $0.bytesIn += count }
            context.write(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
        case .end(let trailers):
            finish(connection, trailers: trailers)
        }
    }

    func upstreamReadComplete(_ connection: UpstreamHandler) {
        if connection === upstream { context?.flush() }
    }

    func upstreamBecameWritable(_ connection: UpstreamHandler) {
        guard connection === upstream, pendingClientRead, let context else { return }
        pendingClientRead = false
        context.read()
    }

    func upstreamClosed(_ connection: UpstreamHandler) {
        guard connection === upstream else { return }
        if responseStarted {
            // Cut mid-response: nothing can be replayed to this client; end its connection.
            if let backend {
                service.balancer.closed(backend)
                service.balancer.failed(backend, nowMillis: Clock.nowMillis())
                service.count(backend) { $0.errors += 1 }
            }
            backend = nil
            upstream = nil
            context?.close(promise: nil)
        } else {
            attemptFailed(nothingSent: false)
        }
    }

    private func finish(_ connection: UpstreamHandler, trailers: HTTPHeaders?) {
        guard let context else { return }
        timeout?.cancel()
        if let backend { service.balancer.closed(backend) }
        backend = nil
        upstream = nil
        connection.exchange = nil
        if requestEnded { service.pool.park(connection) } else { connection.close() }
        let closeAfter = !clientKeepAlive || !requestEnded
        head = nil
        body = []
        let written = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
        if closeAfter {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// The balancer answers itself: no backend could (nothing has been sent to the client for this request).
    private func respondError(_ status: HTTPResponseStatus, _ message: String) {
        guard let context else { return }
        timeout?.cancel()
        service.countRejected()
        if let backend { service.balancer.closed(backend) }
        backend = nil
        upstream = nil
        let closeAfter = !clientKeepAlive || !requestEnded
        var headers = HTTPHeaders()
        let text = "\(status.code) \(status.reasonPhrase): \(message)\n"
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(text.utf8.count))
        if closeAfter { headers.add(name: "connection", value: "close") }
        head = nil
        body = []
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if closeAfter {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 section 7.6.1), plus any the
/// Connection header names.
enum HopByHop {
    static let names = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization"]

    static func strip(_ headers: inout HTTPHeaders) {
        for token in headers[canonicalForm: "connection"] {
            let name = token.lowercased()
            if name != "transfer-encoding", name != "content-length" { headers.remove(name: String(name)) }
        }
        for name in names { headers.remove(name: name) }
    }
}

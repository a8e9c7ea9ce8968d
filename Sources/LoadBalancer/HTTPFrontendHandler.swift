import Balancing
import NIOCore

/// One client's HTTP/1.1 connection: every request is balanced on its own and sent over a pooled keep-alive
/// upstream connection. The balancer speaks HTTP/1.1 itself on raw bytes, as HAProxy and NGINX do: it parses
/// only the request head (`HTTPHeadParser`), writes a new one for the backend (`HTTPHeadWriter`: connection
/// fields dropped, X-Forwarded-For and -Proto set), then forwards the body's bytes as they come while
/// `HTTPBodyFramer` finds where it ends; the response goes back the same way. Pipelined requests are taken one at
/// a time: the next is parsed only once the response to this one has ended.
///
/// A request whose backend cannot be reached goes to another; an idempotent one whose upstream connection fails
/// or times out before the response starts is replayed on another (its body is kept up to `replayLimit` for
/// that). When nothing can answer, the client gets a clear 502, 503 or 504; a malformed request gets a 4xx
/// saying what was wrong, and the connection closes.
///
/// A service scaled to zero (`holdWhenEmpty`) holds a request that finds no backend (its body is kept as for a
/// replay, reads pausing past the replay limit) until a backend appears, then dispatches it as usual; at the
/// hold timeout the client gets a 503 saying no replica started in time.
final class HTTPFrontendHandler: ChannelDuplexHandler, HeldConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Request bodies up to this size are kept so the request can be replayed on another backend.
    static let replayLimit = 64 * 1024
    /// How long a closing connection keeps reading (and dropping) what the client still sends.
    static let lingerMillis: Int64 = 2_000
    /// Client bytes read ahead of the request being answered (pipelining) before reads pause.
    static let readAheadLimit = HTTPHeadParser.maxHeadBytes

    let service: LoopService
    var context: ChannelHandlerContext?
    private var clientAddress: [UInt8] = []
    private var clientHash: UInt64 = 0
    private(set) var clientWritable = true
    /// The client half-closed: answer what it sent, then close.
    var clientInputEnded = false

    // MARK: The request in progress

    enum Phase {
        /// Waiting for (the rest of) a request head.
        case head
        /// Reading the request body.
        case body
        /// The whole request is read; waiting for the response to end.
        case sent
        /// The connection ends once what is queued is written.
        case closing
    }

    var phase = Phase.head
    /// Client bytes not handled yet: a partial head, or what came after the request being answered.
    private var inbound: ByteBuffer?
    private var requestParser = HTTPHeadParser(kind: .request)
    private var requestFramer = HTTPBodyFramer(.none)
    var method = HTTPMethod.get
    var clientIsHTTP10 = false
    var clientKeepAlive = true
    /// The head written for the backend, kept for a replay (its storage is reused by the next request).
    private var upstreamHead = ByteBuffer()
    /// The body so far, while it may be replayed or while no upstream connection is ready to take it.
    private var body: [ByteBuffer] = []
    private var bodyBytes = 0
    /// The whole body so far is in `body`; false once it outgrew the replay limit and went out.
    var replayable = true
    private var pendingClientRead = false
    private var upstreamNeedsFlush = false
    /// `readRequests()` is running (an answer given from inside it must not start it again: one loop, no recursion).
    private var readingRequests = false

    // MARK: The attempt in progress

    var tried: [BackendState] = []
    var backend: BackendState?
    var slot: BackendSlot?
    var upstream: UpstreamHandler?
    private var attempt = 0
    var dispatchedMicros: UInt64 = 0
    /// The request waits in the service's hold queue for its first backend.
    private var holding = false

    // MARK: The response in progress (HTTPFrontendHandler+Response.swift)

    var responseInbound: ByteBuffer?
    var responseParser = HTTPHeadParser(kind: .response)
    var responseFramer = HTTPBodyFramer(.none)
    var responseStarted = false
    /// The client speaks HTTP/1.0 and the response is chunked: only the chunks' data goes to it.
    var dechunk = false
    var closeAfterResponse = false
    var upstreamReusable = false
    /// Heads for the client are written here (storage reused from response to response).
    var clientOut = ByteBuffer()
    /// `clientOut` holds a head not yet written (a small body may join it, to leave in one write).
    var clientOutPending = false
    var clientNeedsFlush = false

    // MARK: Timer

    /// What the one timer of the connection is waiting for.
    enum Deadline { case none, idle, response, linger, hold }
    private var deadlineKind = Deadline.none
    private var deadline = NIODeadline.distantFuture
    private var timer: Scheduled<Void>?
    private var timerAt = NIODeadline.distantFuture
    /// The clock as read at the dispatch (or when a new upstream connection came up), so the response timer
    /// of a request sent right then needs no reading of its own.
    var lastClockRead = NIODeadline.uptimeNanoseconds(0)

    init(service: LoopService) { self.service = service }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let address = context.channel.remoteAddress?.ipAddress ?? ""
        clientAddress = Array(address.utf8)
        clientHash = ClientHash.of(address.utf8)
        setDeadline(.idle)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    // MARK: - From the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase != .closing else { return }
        var bytes = unwrapInboundIn(data)
        if inbound == nil {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        readRequests()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if upstreamNeedsFlush {
            upstreamNeedsFlush = false
            upstream?.flush()
        }
    }

    func read(context: ChannelHandlerContext) {
        // Reads stay on while they can (pausing costs two epoll_ctl calls); they pause for backpressure and
        // for a client that runs too far ahead of its answers.
        switch phase {
        case .head:
            context.read()
        case .body:
            if let upstream, !upstream.isConnecting {
                if upstream.isWritable { context.read() } else { pendingClientRead = true }
            } else if bodyBytes > Self.replayLimit {
                pendingClientRead = true
            } else {
                context.read()
            }
        case .sent, .closing:
            if (inbound?.readableBytes ?? 0) < Self.readAheadLimit { context.read() } else { pendingClientRead = true }
        }
    }

    /// Reads again if a read was held back.
    func resumeClientReads() {
        guard pendingClientRead, let context else { return }
        pendingClientRead = false
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        clientWritable = context.channel.isWritable
        if clientWritable { upstream?.resumeReading() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            clientInputEnded = true
            // A request cut short can't be answered; one fully sent still is (then the connection closes).
            if phase != .sent { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        phase = .closing
        stopHolding()
        // The client left mid-exchange: that upstream connection is in an unknown state.
        dropAttempt()
        inbound = nil
        responseInbound = nil
        body = []
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Handles what the client sent, request by request, until more bytes are needed or a request is in flight.
    func readRequests() {
        guard !readingRequests else { return }
        readingRequests = true
        defer { readingRequests = false }
        while phase == .head || phase == .body {
            guard let bytes = inbound, bytes.readableBytes > 0 else {
                inbound = nil  // gives the read buffer back to NIO's pool
                return
            }
            if phase == .head {
                guard readHead() else { return }
            } else {
                readBody()
            }
        }
    }

    private enum HeadOutcome {
        case incomplete
        case refused(HTTPFramingError)
        case complete(length: Int, HTTP1RequestHead)
    }

    /// Parses the request head at the start of `inbound`; a complete one is written anew for the backend and
    /// dispatched. False when more bytes are needed or the request was refused.
    private func readHead() -> Bool {
        let outcome = inbound!.withUnsafeReadableBytes { bytes -> HeadOutcome in
            do throws(HTTPFramingError) {
                guard let length = try requestParser.parse(bytes) else { return .incomplete }
                let head = try HTTP1RequestHead(requestParser, bytes)
                upstreamHead.clear()
                HTTPHeadWriter.writeRequest(requestParser, head, bytes, clientAddress: clientAddress, into: &upstreamHead)
                return .complete(length: length, head)
            } catch {
                return .refused(error)
            }
        }
        switch outcome {
        case .incomplete:
            return false
        case .refused(let error):
            refuse(error)
            return false
        case .complete(let length, let head):
            inbound!.moveReaderIndex(forwardBy: length)
            requestParser.reset()
            begin(head)
            dispatch()
            return true
        }
    }

    private func begin(_ head: HTTP1RequestHead) {
        method = head.method
        clientIsHTTP10 = head.isHTTP10
        clientKeepAlive = head.keepAlive
        requestFramer = HTTPBodyFramer(head.framing)
        body.removeAll(keepingCapacity: true)
        bodyBytes = 0
        replayable = true
        tried.removeAll(keepingCapacity: true)
        responseStarted = false
        phase = requestFramer.isDone ? .sent : .body
        // No timer while the client sends its body; the response timer starts once it is all sent.
        setDeadline(.none)
    }

    /// Forwards the body bytes at the start of `inbound` (or holds them until an upstream connection is ready).
    private func readBody() {
        let consumed = inbound!.withUnsafeReadableBytes { bytes -> Result<Int, HTTPFramingError> in
            do throws(HTTPFramingError) {
                return .success(try requestFramer.consume(bytes))
            } catch {
                return .failure(error)
            }
        }
        switch consumed {
        case .failure(let error):
            // The client's framing broke mid-body: what the backend got of it is unusable, and so is this connection.
            dropAttempt()
            if responseStarted {
                phase = .closing
                context?.close(promise: nil)
            } else {
                refuse(error)
            }
        case .success(let count):
            if count > 0 { forwardBody(inbound!.readSlice(length: count)!) }
            if requestFramer.isDone { requestSent() }
        }
    }

    private func forwardBody(_ part: ByteBuffer) {
        bodyBytes += part.readableBytes
        slot?.stats.bytesOut &+= UInt64(part.readableBytes)
        if let upstream, !upstream.isConnecting {
            upstream.write(part)
            upstreamNeedsFlush = true
            if replayable { body.append(part) }
            if bodyBytes > Self.replayLimit {
                replayable = false
                body.removeAll()
            }
        } else {
            // Held until an upstream connection is ready (reads pause past the replay limit).
            body.append(part)
            if bodyBytes > Self.replayLimit { replayable = false }
        }
    }

    /// The whole request has been read from the client.
    private func requestSent() {
        phase = .sent
        if let upstream, !upstream.isConnecting {
            upstreamNeedsFlush = false
            upstream.flush()
            setDeadline(.response)
        }
    }

    // MARK: - Choosing a backend

    func dispatch() {
        guard let context else { return }
        attempt += 1
        let thisAttempt = attempt
        let now = NIODeadline.now()
        let nowMicros = now.uptimeNanoseconds / 1_000
        lastClockRead = now
        guard !service.retired,
              let chosen = service.balancer.pick(clientHash: clientHash, nowMillis: nowMicros / 1000, avoiding: tried),
              let slot = service.slot(for: chosen)
        else {
            if tried.isEmpty, !holding, service.hold(self) {
                holding = true
                setDeadline(.hold, from: now)
                return
            }
            respondError(tried.isEmpty ? 503 : 502,
                         tried.isEmpty ? "no backend is available for \(service.name)" : "no backend of \(service.name) could be reached")
            return
        }
        backend = chosen
        self.slot = slot
        service.balancer.opened(chosen)
        slot.stats.requests &+= 1
        dispatchedMicros = nowMicros
        if let pooled = slot.takeIdle() {
            attach(pooled)
            return
        }
        let placeholder = UpstreamHandler(backend: chosen, slot: slot)
        placeholder.isConnecting = true
        upstream = placeholder
        UpstreamHandler.connect(to: chosen, slot: slot, on: context.eventLoop,
                                timeoutMillis: service.settings.connectTimeoutMillis) { result in
            guard self.attempt == thisAttempt, self.context != nil, self.phase != .closing else {
                if case .success(let connection) = result { slot.park(connection) }
                return
            }
            switch result {
            case .success(let connection):
                self.lastClockRead = .now()
                self.attach(connection)
            case .failure: self.attemptFailed(nothingSent: true)
            }
        }
    }

    private func attach(_ connection: UpstreamHandler) {
        upstream = connection
        connection.exchange = self
        responseParser.reset()
        responseInbound = nil
        slot?.stats.bytesOut &+= UInt64(upstreamHead.readableBytes)
        if phase == .sent { setDeadline(.response, from: lastClockRead) }
        upstreamNeedsFlush = false
        if body.isEmpty {
            connection.writeAndFlush(upstreamHead)
        } else {
            connection.write(upstreamHead)
            for part in body { connection.write(part) }
            if !replayable { body.removeAll() }
            connection.flush()
        }
        if connection.isWritable { resumeClientReads() }
    }

    /// This attempt's backend failed (refused, reset, timed out): it counts against it, and it is not tried
    /// again for this request.
    func abandonAttempt() -> BackendState? {
        setDeadline(.none)
        guard let failed = backend else { return nil }
        if let upstream {
            upstream.exchange = nil
            upstream.close()
        }
        backend = nil
        upstream = nil
        service.balancer.closed(failed)
        service.balancer.failed(failed, nowMillis: Clock.nowMillis())
        slot?.stats.errors &+= 1
        tried.append(failed)
        return failed
    }

    func attemptFailed(nothingSent: Bool) {
        guard abandonAttempt() != nil else { return }
        let replay = nothingSent || (method.isIdempotent && replayable)
        if replay, tried.count <= service.settings.retries, !responseStarted {
            slot?.stats.retries &+= 1
            dispatch()
        } else if nothingSent {
            respondError(502, "no backend of \(service.name) could be reached (\(tried.count) tried)")
        } else {
            respondError(502, "the backend of \(service.name) failed before answering")
        }
    }

    // MARK: - Held while the service has no backend

    func holdEnded(_ ending: HoldEnding) {
        guard holding else { return }
        holding = false
        setDeadline(.none)
        switch ending {
        case .forward: dispatch()
        case .refuse: respondError(503, "no backend is available for \(service.name)")
        }
    }

    private func holdTimedOut() {
        guard holding else { return }
        holding = false
        service.holdTimedOut(self)
        respondError(503, "no replica of \(service.name) started within \(service.settings.holdTimeoutMillis) ms; try again shortly")
    }

    /// Leaves the hold queue (the client left, or is answered otherwise).
    private func stopHolding() {
        guard holding else { return }
        holding = false
        service.unhold(self)
    }

    private func responseTimedOut() {
        let waited = service.settings.requestTimeoutMillis
        guard abandonAttempt() != nil else { return }
        if method.isIdempotent, replayable, tried.count <= service.settings.retries {
            slot?.stats.retries &+= 1
            dispatch()
        } else {
            respondError(504, "the backend of \(service.name) did not answer within \(waited) ms")
        }
    }

    // MARK: - Ending an exchange

    /// Lets go of the attempt in progress: its backend has one fewer active, and its upstream connection (in an
    /// unknown state) closes.
    func dropAttempt() {
        if let backend { service.balancer.closed(backend) }
        if let upstream {
            upstream.exchange = nil
            upstream.close()
        }
        backend = nil
        upstream = nil
        slot = nil
    }

    /// The response has gone to the client: the upstream connection goes back to its pool (or closes), and the
    /// next request, if the client sent one already, is handled.
    func exchangeEnded() {
        if let backend { service.balancer.closed(backend) }
        if let upstream {
            upstream.exchange = nil
            if upstreamReusable && phase == .sent { slot?.park(upstream) } else { upstream.close() }
        }
        backend = nil
        upstream = nil
        slot = nil
        responseInbound = nil
        body.removeAll(keepingCapacity: true)
        if closeAfterResponse || phase != .sent {
            closeAfterWrites()
            return
        }
        if clientNeedsFlush {
            clientNeedsFlush = false
            context?.flush()
        }
        nextRequest()
    }

    /// The exchange is over and the connection stays: on to the next request, which may have come already.
    private func nextRequest() {
        phase = .head
        setDeadline(.idle)
        readRequests()
        guard phase == .head else { return }
        // A client that half-closed is done once nothing it sent is left to answer.
        if clientInputEnded { closeAfterWrites() } else { resumeClientReads() }
    }

    /// Ends the client connection once what is queued for it is written. While the client may still be sending
    /// (a refused or early-answered request), only the output ends at first, and what comes in is read and
    /// dropped until the client closes or `lingerMillis` pass: closing with unread input would reset the
    /// connection, and the client might lose the answer (NGINX's lingering close).
    func closeAfterWrites() {
        let linger = (phase == .head || phase == .body) && !clientInputEnded
        phase = .closing
        inbound = nil
        clientNeedsFlush = false
        setDeadline(linger ? .linger : .none)
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            context.close(mode: linger ? .output : .all, promise: nil)
        }
    }

    /// A malformed request: the client gets the reason, and the connection closes (its framing can't be trusted).
    private func refuse(_ error: HTTPFramingError) {
        clientKeepAlive = false
        respondError(error.status, error.message)
    }

    /// The balancer answers itself: no backend could (nothing has been sent to the client for this request).
    func respondError(_ status: Int, _ message: String) {
        guard let context else { return }
        setDeadline(.none)
        stopHolding()
        service.countRejected()
        dropAttempt()
        let closeAfter = !clientKeepAlive || phase != .sent
        let text = "\(status) \(Self.reason(status)): \(message)\n"
        var answer = context.channel.allocator.buffer(capacity: 160 + text.utf8.count)
        answer.writeString("HTTP/1.1 \(status) \(Self.reason(status))\r\ncontent-type: text/plain; charset=utf-8\r\n")
        answer.writeString("content-length: \(text.utf8.count)\r\n")
        if closeAfter { answer.writeStaticString("connection: close\r\n") }
        answer.writeStaticString("\r\n")
        answer.writeString(text)
        context.write(wrapOutboundOut(answer), promise: nil)
        body.removeAll(keepingCapacity: true)
        if closeAfter {
            closeAfterWrites()
        } else {
            context.flush()
            nextRequest()
        }
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 417: "Expectation Failed"
        case 431: "Request Header Fields Too Large"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: "Error"
        }
    }

    // MARK: - Timer

    /// One timer per connection covers both the idle time between requests and the wait for a response. It is
    /// moved only when a deadline comes earlier than the time it is set for; otherwise it fires, sees the later
    /// deadline and sets itself again, so a busy connection schedules about once per timeout, not per request.
    func setDeadline(_ kind: Deadline) {
        setDeadline(kind, from: .now())
    }

    /// The same, counting from `now` (a clock reading the caller already has).
    func setDeadline(_ kind: Deadline, from now: NIODeadline) {
        deadlineKind = kind
        let millis: Int64
        switch kind {
        case .none: return
        case .idle: millis = service.settings.idleTimeoutMillis
        case .response: millis = service.settings.requestTimeoutMillis
        case .linger: millis = Self.lingerMillis
        case .hold: millis = service.settings.holdTimeoutMillis
        }
        deadline = now + .milliseconds(millis)
        if timer != nil {
            if timerAt <= deadline { return }
            timer?.cancel()
        }
        schedule(at: deadline)
    }

    private func schedule(at when: NIODeadline) {
        guard let context else { return }
        timerAt = when
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { self.timerFired() }
    }

    private func timerFired() {
        timer = nil
        guard deadlineKind != .none else { return }
        if NIODeadline.now() < deadline {
            schedule(at: deadline)
            return
        }
        let kind = deadlineKind
        deadlineKind = .none
        switch kind {
        case .none: break
        case .idle: if phase == .head { closeAfterWrites() }
        case .response: if !responseStarted { responseTimedOut() }
        case .linger: context?.close(promise: nil)
        case .hold: holdTimedOut()
        }
    }
}

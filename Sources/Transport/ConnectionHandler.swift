import ClusterModel
import DequeModule
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import PKI
import Wire
import X509

/// A call the server accepted, handed from the event loop to the server's async side.
struct IncomingCall: Sendable {
    let streamID: UInt32
    let method: String
    /// When the caller stops waiting; nil for no deadline.
    let deadline: NIODeadline?
    let metadata: [String: String]
    let peer: PeerIdentity
    /// The caller's IP address (rate limits for callers without a certificate).
    let remoteAddress: String?
    let inbox: StreamInbox
    let lifecycle: CallLifecycle
    let connection: ConnectionPort
}

/// How a connection learns who the peer is.
enum PeerIdentification: Sendable {
    /// Read from the peer's TLS certificate once the handshake completes; a role outside the set is refused.
    case certificate(allowedRoles: Set<NodeRole>)
    /// Known in advance: for connections without TLS in tests (EmbeddedChannel).
    case fixed(PeerIdentity)
}

/// One end of a protocol connection, on its event loop: handshake, stream multiplexing, flow control,
/// deadlines, keepalive and GOAWAY. Everything here runs on the channel's event loop; the async side reaches
/// it through `ConnectionPort`.
///
/// Any protocol violation by the peer ends the connection with GOAWAY carrying a reason, never a crash.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    typealias InboundOut = IncomingCall
    typealias OutboundOut = ByteBuffer

    enum Role: Sendable { case client, server }

    /// What the peer announced in its HELLO.
    struct PeerSettings {
        var maxFrameSize: Int
        var initialStreamWindow: Int
        var maxConcurrentStreams: Int
        var acceptsCompression: Bool
        var software: String
    }

    private enum Phase {
        /// Our HELLO is sent; the peer's has not arrived.
        case handshaking
        case open
        /// A GOAWAY was sent or received: no new streams; the connection closes when the last stream ends.
        case goingAway
        case closed
    }

    /// A message or a status waiting for send window.
    private enum PendingSend {
        case message(ByteBuffer, flags: FrameFlags, promise: EventLoopPromise<Void>?)
        case status(Flotilla_V1_Status)
    }

    private struct Stream {
        let inbox: StreamInbox
        /// Server side only: tells the handler's supervisor to cancel it.
        let lifecycle: CallLifecycle?
        var sendWindow: Int
        var receiveWindow: Int
        var pending = Deque<PendingSend>()
        var remoteEnded = false
        var localEnded = false
        /// Message bytes received on this stream, and how many of them were returned to the connection window.
        var receivedBytes = 0
        var creditedBytes = 0
        var deadlineTimer: Scheduled<Void>?
    }

    /// A client call waiting for a stream slot (the server's concurrency limit) or for the handshake.
    private struct PendingOpen {
        let handle: ClientStreamHandle
        let head: Flotilla_V1_RequestHead
        let message: ByteBuffer?
        let endStream: Bool
        /// When the caller stops waiting, fixed when the call was made (it also runs while queued).
        let deadline: NIODeadline?
    }

    let role: Role
    let configuration: TransportConfiguration
    let logger: Logger
    private let identification: PeerIdentification

    private(set) var context: ChannelHandlerContext!
    private var phase = Phase.handshaking
    private(set) var peer: PeerIdentity?
    private(set) var peerSettings: PeerSettings?
    private var streams: [UInt32: Stream] = [:]
    /// Client: the id the next stream gets. Server: the highest id the peer has opened.
    private var nextStreamID: UInt32 = 1
    private var lastPeerStreamID: UInt32 = 0
    /// GOAWAY received from the peer: streams above this id were not processed.
    private var peerGoAwayLastStream: UInt32?
    private var pendingOpens = Deque<PendingOpen>()
    /// Deadline timers of calls still waiting in `pendingOpens`.
    private var queuedDeadlines: [ObjectIdentifier: Scheduled<Void>] = [:]
    /// Streams that have sends waiting for window, served round robin when credit arrives.
    private var blockedStreams = Deque<UInt32>()

    private var connectionSendWindow = 0
    private var connectionReceiveWindow: Int
    private var connectionCreditPending = 0

    private var handshakeTimer: Scheduled<Void>?
    private var keepaliveTimer: Scheduled<Void>?
    private var shutdownTimer: Scheduled<Void>?
    private var lastFrameReceivedAt = NIODeadline.uptimeNanoseconds(0)
    private var pingOutstandingSince: NIODeadline?
    private var needsFlush = false
    private var inReadLoop = false

    /// Completed when the handshake is done (both HELLOs, peer identity known); failed if it never is.
    let ready: EventLoopPromise<PeerIdentity>
    private var readyCompleted = false
    /// Why the connection ended, for calls that fail because of it.
    private var closeReason: RPCError?

    init(
        role: Role, configuration: TransportConfiguration, identification: PeerIdentification,
        eventLoop: EventLoop, logger: Logger
    ) {
        self.role = role
        self.configuration = configuration
        self.identification = identification
        self.logger = logger
        self.connectionReceiveWindow = configuration.connectionWindow
        self.ready = eventLoop.makePromise(of: PeerIdentity.self)
        if case .fixed(let identity) = identification { self.peer = identity }
    }

    // MARK: - Channel lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private var started = false
    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        lastFrameReceivedAt = context.eventLoop.now
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(configuration.handshakeTimeout)) { [self] in
            guard phase == .handshaking else { return }
            fail(RPCError(.unavailable, "handshake did not complete within \(configuration.handshakeTimeout)"),
                 goAway: .unavailable)
        }
        var hello = Flotilla_V1_Hello()
        hello.protocolVersion = ProtocolVersion.current
        hello.maxFrameSize = UInt32(configuration.maxFrameSize)
        hello.initialStreamWindow = UInt32(configuration.initialStreamWindow)
        hello.connectionWindow = UInt32(configuration.connectionWindow)
        hello.maxConcurrentStreams = role == .server ? UInt32(configuration.maxConcurrentStreams) : 0
        if configuration.acceptsCompression { hello.capabilities = [Capability.zlib] }
        hello.software = "flotilla \(FlotillaVersion.current)"
        writeProto(.hello, streamID: 0, hello)
        flushIfNeeded()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let reason = closeReason ?? RPCError(.unavailable, "connection to the peer was closed")
        tearDown(reason)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, case .certificate(let allowedRoles) = identification {
            do {
                guard let certificate = try context.pipeline.syncOperations.nioSSL_peerCertificate() else {
                    // A server that takes joins lets a caller without a certificate in as a joiner, which may
                    // call the join method and nothing else (the router checks).
                    guard allowedRoles.contains(.joiner) else {
                        throw RPCError(.unauthenticated, "the peer presented no certificate")
                    }
                    peer = PeerIdentity(nodeID: NodeID("(joiner)"), role: .joiner)
                    completeHandshakeIfReady()
                    context.fireUserInboundEventTriggered(event)
                    return
                }
                let identity = try PKI.identity(of: Certificate(derEncoded: certificate.toDERBytes()))
                guard allowedRoles.contains(identity.role) else {
                    throw RPCError(
                        .permissionDenied,
                        "peer certificate is for \(identity); expected one of: \(allowedRoles.map(\.rawValue).sorted().joined(separator: ", "))")
                }
                peer = identity
                completeHandshakeIfReady()
            } catch let error as RPCError {
                fail(error, goAway: error.code)
            } catch {
                fail(RPCError(.unauthenticated, "peer certificate carries no valid Flotilla identity: \(error)"),
                     goAway: .unauthenticated)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case let error as FrameDecodingError:
            fail(RPCError(.invalidArgument, "protocol violation: \(error)"), goAway: .invalidArgument)
        case is NIOSSLError, is BoringSSLError:
            let remote = context.channel.remoteAddress
            fail(ConnectionFailure.describe(error, host: remote?.ipAddress ?? "peer", port: remote?.port ?? 0), goAway: nil)
        default:
            fail(RPCError(.unavailable, "connection error: \(error)"), goAway: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushNow()
        context.fireChannelReadComplete()
    }

    // MARK: - Frames in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase != .closed else { return }
        let frame = unwrapInboundIn(data)
        lastFrameReceivedAt = context.eventLoop.now
        pingOutstandingSince = nil
        inReadLoop = true
        defer { inReadLoop = false }

        if peerSettings == nil && frame.type != .hello {
            return violation("expected HELLO as the first frame, got \(frame.type)")
        }
        switch frame.type {
        case .hello: helloReceived(frame)
        case .request: requestReceived(frame)
        case .message: messageReceived(frame)
        case .status: statusReceived(frame)
        case .cancel: cancelReceived(frame)
        case .ping: pingReceived(frame)
        case .pong: break  // any frame counts as liveness; nothing more to do
        case .goAway: goAwayReceived(frame)
        case .windowUpdate: windowUpdateReceived(frame)
        case .halfClose: halfCloseReceived(frame)
        }
    }

    private func helloReceived(_ frame: Frame) {
        guard peerSettings == nil else { return violation("second HELLO on one connection") }
        guard frame.streamID == 0 else { return violation("HELLO on stream \(frame.streamID); it belongs on stream 0") }
        let hello: Flotilla_V1_Hello
        do {
            hello = try PayloadCodec.decode(Flotilla_V1_Hello.self, from: frame.payload)
        } catch {
            return violation("HELLO does not decode: \(error)")
        }
        guard hello.protocolVersion == ProtocolVersion.current else {
            let who = role == .server ? "this server" : "this client"
            return fail(
                RPCError(
                    .failedPrecondition,
                    "protocol version mismatch: \(who) speaks Flotilla protocol \(ProtocolVersion.current), the peer (\(hello.software)) speaks \(hello.protocolVersion); upgrade the older side"),
                goAway: .failedPrecondition)
        }
        guard hello.maxFrameSize >= 1024, hello.initialStreamWindow >= 1024, hello.connectionWindow >= hello.initialStreamWindow,
              hello.connectionWindow <= UInt32(Int32.max) else {
            return violation("HELLO announces unusable limits (max frame \(hello.maxFrameSize), stream window \(hello.initialStreamWindow), connection window \(hello.connectionWindow))")
        }
        if role == .client && hello.maxConcurrentStreams == 0 {
            return violation("server HELLO allows 0 concurrent streams")
        }
        peerSettings = PeerSettings(
            maxFrameSize: Int(hello.maxFrameSize),
            initialStreamWindow: Int(hello.initialStreamWindow),
            maxConcurrentStreams: Int(hello.maxConcurrentStreams),
            acceptsCompression: hello.capabilities.contains(Capability.zlib),
            software: hello.software)
        connectionSendWindow = Int(hello.connectionWindow)
        completeHandshakeIfReady()
    }

    private func completeHandshakeIfReady() {
        guard phase == .handshaking, peerSettings != nil, peer != nil else { return }
        phase = .open
        handshakeTimer?.cancel()
        handshakeTimer = nil
        readyCompleted = true
        ready.succeed(peer!)
        scheduleKeepalive()
        drainPendingOpens()
    }

    private func requestReceived(_ frame: Frame) {
        guard role == .server else { return violation("REQUEST sent to a client") }
        let id = frame.streamID
        guard id != 0, id > lastPeerStreamID else {
            return violation("REQUEST reuses stream id \(id) (last opened: \(lastPeerStreamID)); ids must increase")
        }
        lastPeerStreamID = id
        guard phase == .open, let peer else {
            // Going away: the client retries this call elsewhere. Its first message was charged to the
            // client's connection window, so return that credit, or its other calls could stall.
            if frame.flags.contains(.hasMessage),
               let headLength = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt16.self) {
                let cost = frame.payload.readableBytes - 2 - Int(headLength) + Frame.headerSize
                if cost > 0, chargeReceiveWindow(cost, streamWindow: nil) { creditConnection(cost) }
            }
            return
        }
        guard streams.count < configuration.maxConcurrentStreams else {
            return fail(
                RPCError(.resourceExhausted, "more than \(configuration.maxConcurrentStreams) concurrent streams; the limit was announced in HELLO"),
                goAway: .resourceExhausted)
        }
        let head: Flotilla_V1_RequestHead
        let firstMessage: ByteBuffer?
        do {
            (head, firstMessage) = try PayloadCodec.decodeRequest(frame.payload, hasMessage: frame.flags.contains(.hasMessage))
        } catch let error as RPCError {
            return violation(error.message)
        } catch {
            return violation("REQUEST does not decode: \(error)")
        }
        let messageBytes = firstMessage.map(Self.flowCost) ?? 0
        guard chargeReceiveWindow(messageBytes, streamWindow: nil) else { return }

        let port = ConnectionPort(handler: self)
        let inbox = StreamInbox(reportThreshold: max(1, configuration.initialStreamWindow / 4)) { bytes in
            port.consumed(streamID: id, bytes: bytes)
        }
        let lifecycle = CallLifecycle()
        var stream = Stream(
            inbox: inbox, lifecycle: lifecycle,
            sendWindow: peerSettings!.initialStreamWindow,
            receiveWindow: configuration.initialStreamWindow - messageBytes)
        stream.receivedBytes = messageBytes
        var deadline: NIODeadline?
        if head.timeoutMicros > 0 {
            let timeout = TimeAmount.microseconds(Int64(clamping: head.timeoutMicros))
            deadline = context.eventLoop.now + timeout
            stream.deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                deadlineExceeded(streamID: id, timeout: timeout)
            }
        }
        streams[id] = stream
        if let firstMessage {
            guard deliver(firstMessage, flags: frame.flags, to: id) else { return }
            // A first message that failed to inflate already ended the call with a status.
            guard streams[id] != nil else { return }
        }
        if frame.flags.contains(.endStream) {
            streams[id]?.remoteEnded = true
            inbox.finish(.finished)
        }
        let call = IncomingCall(
            streamID: id, method: head.method, deadline: deadline, metadata: head.metadata, peer: peer,
            remoteAddress: context.channel.remoteAddress?.ipAddress, inbox: inbox, lifecycle: lifecycle, connection: port)
        context.fireChannelRead(wrapInboundOut(call))
    }

    private func messageReceived(_ frame: Frame) {
        let id = frame.streamID
        let size = Self.flowCost(frame.payload)
        guard id != 0 else { return violation("MESSAGE on stream 0") }
        guard streams[id] != nil else {
            guard isKnownClosed(id) else { return violation("MESSAGE on stream \(id), which was never opened") }
            // The stream ended while this was in flight (cancel, deadline, status): drop it, but return its
            // window so the connection does not slowly starve.
            guard chargeReceiveWindow(size, streamWindow: nil) else { return }
            creditConnection(size)
            return
        }
        guard !streams[id]!.remoteEnded else {
            return violation("MESSAGE on stream \(id) after the sender ended it")
        }
        guard chargeReceiveWindow(size, streamWindow: id) else { return }
        streams[id]!.receivedBytes += size
        guard deliver(frame.payload, flags: frame.flags, to: id) else { return }
        // A message that failed to inflate ended its call (and removed the stream).
        guard streams[id] != nil else { return }
        if frame.flags.contains(.endStream) {
            guard role == .server else { return violation("END_STREAM on a MESSAGE from the server; a server ends a stream with STATUS") }
            streams[id]!.remoteEnded = true
            streams[id]!.inbox.finish(.finished)
        }
    }

    /// Decompresses if needed and hands the message to the stream's inbox. False if the connection failed.
    private func deliver(_ payload: ByteBuffer, flags: FrameFlags, to id: UInt32) -> Bool {
        var message = payload
        if flags.contains(.compressed) {
            guard configuration.acceptsCompression else {
                violation("COMPRESSED frame, but this side did not announce the zlib capability")
                return false
            }
            do {
                message = try PayloadCodec.decompress(payload, maxSize: configuration.maxMessageSize, allocator: context.channel.allocator)
            } catch let error as RPCError {
                // A bad message fails its call, not the connection: the framing is intact.
                failStream(id, error, notifyPeer: true)
                return true
            } catch {
                failStream(id, RPCError(.invalidArgument, "\(error)"), notifyPeer: true)
                return true
            }
        }
        streams[id]?.inbox.deliver(message, wireSize: Self.flowCost(payload))
        return true
    }

    private func halfCloseReceived(_ frame: Frame) {
        guard role == .server else { return violation("HALF_CLOSE sent to a client") }
        let id = frame.streamID
        guard id != 0 else { return violation("HALF_CLOSE on stream 0") }
        guard streams[id] != nil else {
            guard isKnownClosed(id) else { return violation("HALF_CLOSE on stream \(id), which was never opened") }
            return
        }
        guard !streams[id]!.remoteEnded else { return violation("HALF_CLOSE on stream \(id), which the client already ended") }
        streams[id]!.remoteEnded = true
        streams[id]!.inbox.finish(.finished)
    }

    private func statusReceived(_ frame: Frame) {
        guard role == .client else { return violation("STATUS sent to a server") }
        let id = frame.streamID
        guard id != 0 else { return violation("STATUS on stream 0") }
        guard streams[id] != nil else {
            guard isKnownClosed(id) else { return violation("STATUS on stream \(id), which was never opened") }
            return
        }
        let status: Flotilla_V1_Status
        do {
            status = try PayloadCodec.decode(Flotilla_V1_Status.self, from: frame.payload)
        } catch {
            return violation("STATUS on stream \(id) does not decode: \(error)")
        }
        let stream = streams[id]!
        stream.inbox.finish(status.error.map { .failed($0) } ?? .finished)
        removeStream(id)
    }

    private func cancelReceived(_ frame: Frame) {
        guard role == .server else { return violation("CANCEL sent to a client") }
        let id = frame.streamID
        guard id != 0 else { return violation("CANCEL on stream 0") }
        guard streams[id] != nil else {
            guard isKnownClosed(id) else { return violation("CANCEL on stream \(id), which was never opened") }
            return
        }
        failStream(id, RPCError(.cancelled, "the client cancelled the call"), notifyPeer: false)
    }

    private func pingReceived(_ frame: Frame) {
        guard frame.streamID == 0, frame.payload.readableBytes == 8 else {
            return violation("PING must carry 8 bytes on stream 0")
        }
        write(.pong, flags: [], streamID: 0, payload: frame.payload)
    }

    private func goAwayReceived(_ frame: Frame) {
        let goAway: Flotilla_V1_GoAway
        do {
            goAway = try PayloadCodec.decode(Flotilla_V1_GoAway.self, from: frame.payload)
        } catch {
            return violation("GOAWAY does not decode: \(error)")
        }
        let code = StatusCode(rawValue: goAway.code)
        if code != .ok {
            // The peer found us in violation (or refused us): nothing more will be processed.
            closeReason = RPCError(code, "peer closed the connection: \(goAway.message)")
            tearDown(closeReason!)
            context.close(promise: nil)
            return
        }
        if role == .server {
            // The client is leaving: it opens nothing more; its calls in flight finish, then we close.
            if phase != .closed { phase = .goingAway }
            closeIfDrained()
            return
        }
        peerGoAwayLastStream = goAway.lastStreamID
        if phase != .closed { phase = .goingAway }
        let notProcessed = RPCError(
            .unavailable,
            "the server is shutting down (GOAWAY: \(goAway.message)) and did not process this call; retry elsewhere")
        for id in streams.keys where id > goAway.lastStreamID {
            failStream(id, notProcessed, notifyPeer: false)
        }
        while let open = pendingOpens.popFirst() { open.handle.inbox.finish(.failed(notProcessed)) }
        closeIfDrained()
    }

    private func windowUpdateReceived(_ frame: Frame) {
        var payload = frame.payload
        guard payload.readableBytes == 4, let increment = payload.readInteger(as: UInt32.self), increment > 0 else {
            return violation("WINDOW_UPDATE must carry a non-zero u32")
        }
        if frame.streamID == 0 {
            connectionSendWindow += Int(increment)
            guard connectionSendWindow <= Int(Int32.max) else { return violation("connection window overflow") }
        } else if streams[frame.streamID] != nil {
            streams[frame.streamID]!.sendWindow += Int(increment)
            guard streams[frame.streamID]!.sendWindow <= Int(Int32.max) else { return violation("stream window overflow") }
        } else {
            return  // a stream that just ended
        }
        serveBlockedStreams()
    }

    // MARK: - Flow control

    /// What a message costs against a window: its bytes plus the frame header, so even empty messages are
    /// bounded by flow control.
    static func flowCost(_ payload: ByteBuffer) -> Int { payload.readableBytes + Frame.headerSize }

    /// Counts a received message against the windows. The sender may overshoot a window by one frame (it may
    /// send whenever the window is positive), never more.
    private func chargeReceiveWindow(_ size: Int, streamWindow id: UInt32?) -> Bool {
        connectionReceiveWindow -= size
        if connectionReceiveWindow < -(configuration.maxFrameSize + Frame.headerSize) {
            violation("peer exceeded the connection flow-control window")
            return false
        }
        if let id {
            streams[id]!.receiveWindow -= size
            if streams[id]!.receiveWindow < -(configuration.maxFrameSize + Frame.headerSize) {
                violation("peer exceeded the flow-control window of stream \(id)")
                return false
            }
        }
        return true
    }

    /// The consumer took `bytes` of messages from a stream: return them to the peer as window.
    fileprivate func consumed(streamID id: UInt32, bytes: Int) {
        guard streams[id] != nil else { return }
        streams[id]!.creditedBytes += bytes
        streams[id]!.receiveWindow += bytes
        if !streams[id]!.remoteEnded {
            writeWindowUpdate(streamID: id, bytes)
        }
        creditConnection(bytes)
        flushIfNeeded()
    }

    private func creditConnection(_ bytes: Int) {
        guard bytes > 0 else { return }
        connectionCreditPending += bytes
        if connectionCreditPending >= configuration.connectionWindow / 4 {
            connectionReceiveWindow += connectionCreditPending
            writeWindowUpdate(streamID: 0, connectionCreditPending)
            connectionCreditPending = 0
        }
    }

    private func writeWindowUpdate(streamID: UInt32, _ bytes: Int) {
        var payload = context.channel.allocator.buffer(capacity: 4)
        payload.writeInteger(UInt32(bytes))
        write(.windowUpdate, flags: [], streamID: streamID, payload: payload)
    }

    private func serveBlockedStreams() {
        var rounds = blockedStreams.count
        while rounds > 0, connectionSendWindow > 0, let id = blockedStreams.popFirst() {
            rounds -= 1
            sendPending(id)
            if let stream = streams[id], !stream.pending.isEmpty { blockedStreams.append(id) }
        }
        flushIfNeeded()
    }

    /// Sends what is queued on a stream while windows allow; a status goes out once everything before it has.
    private func sendPending(_ id: UInt32) {
        while let next = streams[id]?.pending.first {
            switch next {
            case .message(let payload, let flags, let promise):
                guard streams[id]!.sendWindow > 0, connectionSendWindow > 0 else { return }
                streams[id]!.pending.removeFirst()
                streams[id]!.sendWindow -= Self.flowCost(payload)
                connectionSendWindow -= Self.flowCost(payload)
                if flags.contains(.endStream) { streams[id]!.localEnded = true }
                write(.message, flags: flags, streamID: id, payload: payload)
                promise?.succeed()
            case .status(let status):
                streams[id]!.pending.removeFirst()
                writeProto(.status, streamID: id, status)
                removeStream(id)
                return
            }
        }
    }

    // MARK: - Calls from the async side (through ConnectionPort)

    /// Queues a message on a stream; the promise completes when it has been handed to the socket, which is
    /// how a fast writer is slowed to the reader's pace.
    fileprivate func send(_ message: ByteBuffer, streamID id: UInt32, endStream: Bool, promise: EventLoopPromise<Void>?) {
        guard streams[id] != nil, !streams[id]!.localEnded else {
            promise?.fail(closeReason ?? RPCError(.cancelled, "the call has already ended"))
            return
        }
        let payload: ByteBuffer
        var flags: FrameFlags = endStream ? [.endStream] : []
        do {
            (payload, flags) = try prepareOutbound(message, flags: flags)
        } catch {
            promise?.fail(error)
            return
        }
        if endStream && role == .client { streams[id]!.localEnded = true }
        streams[id]!.pending.append(.message(payload, flags: flags, promise: promise))
        if streams[id]!.pending.count == 1 { sendPending(id) }
        if let stream = streams[id], !stream.pending.isEmpty, !blockedStreams.contains(id) {
            blockedStreams.append(id)
        }
        flushIfNeeded()
    }

    /// Server: ends a call with an optional last message and a status.
    fileprivate func finish(streamID id: UInt32, lastMessage: ByteBuffer?, status: Flotilla_V1_Status) {
        guard streams[id] != nil else { return }
        streams[id]!.lifecycle?.complete(.handlerFinished)
        if let lastMessage {
            do {
                let (payload, flags) = try prepareOutbound(lastMessage, flags: [])
                streams[id]!.pending.append(.message(payload, flags: flags, promise: nil))
            } catch let error as RPCError {
                streams[id]!.pending.append(.status(Flotilla_V1_Status(error)))
                sendPending(id)
                flushIfNeeded()
                return
            } catch {
                streams[id]!.pending.append(.status(Flotilla_V1_Status(RPCError(.internalError, "\(error)"))))
            }
        }
        streams[id]!.pending.append(.status(status))
        sendPending(id)
        if let stream = streams[id], !stream.pending.isEmpty, !blockedStreams.contains(id) {
            blockedStreams.append(id)
        }
        flushIfNeeded()
    }

    /// Client: opens a stream for a call (or queues it until a slot is free).
    fileprivate func open(
        handle: ClientStreamHandle, head: Flotilla_V1_RequestHead, message: ByteBuffer?, endStream: Bool,
        timeout: TimeAmount?
    ) {
        let deadline = timeout.map { context.eventLoop.now + $0 }
        let request = PendingOpen(handle: handle, head: head, message: message, endStream: endStream, deadline: deadline)
        if let deadline, let timeout {
            // Fails the call if it is still queued (no stream slot, no handshake) when its deadline passes.
            queuedDeadlines[ObjectIdentifier(handle)] = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
                queuedDeadlines[ObjectIdentifier(handle)] = nil
                guard handle.state.value == .notOpened else { return }
                pendingOpens.removeAll { $0.handle === handle }
                handle.state.value = .closed
                handle.inbox.finish(.failed(RPCError(
                    .deadlineExceeded, "deadline of \(Duration.nanoseconds(timeout.nanoseconds)) exceeded while waiting for a stream")))
            }
        }
        switch phase {
        case .closed, .goingAway:
            handle.inbox.finish(.failed(closeReason ?? RPCError(.unavailable, "the connection is shutting down; retry on a new connection")))
            return
        case .handshaking:
            pendingOpens.append(request)
            return
        case .open:
            if streams.count >= peerSettings!.maxConcurrentStreams || !pendingOpens.isEmpty {
                pendingOpens.append(request)
                return
            }
            openNow(request)
            flushIfNeeded()
        }
    }

    private func openNow(_ request: PendingOpen) {
        let handle = request.handle
        queuedDeadlines.removeValue(forKey: ObjectIdentifier(handle))?.cancel()
        guard handle.state.value == .notOpened else { return }  // cancelled while queued
        guard nextStreamID < UInt32.max else {
            handle.state.value = .closed
            handle.inbox.finish(.failed(RPCError(.unavailable, "this connection has used all its stream ids; open a new connection")))
            return
        }
        let remaining = request.deadline.map { $0 - context.eventLoop.now }
        if let remaining, remaining <= .zero {
            handle.state.value = .closed
            handle.inbox.finish(.failed(RPCError(.deadlineExceeded, "deadline exceeded before the call could start")))
            return
        }
        let id = nextStreamID
        nextStreamID += 1
        handle.state.value = .open(id)
        var stream = Stream(
            inbox: handle.inbox, lifecycle: nil,
            sendWindow: peerSettings!.initialStreamWindow,
            receiveWindow: configuration.initialStreamWindow)
        var head = request.head
        if let timeout = remaining {
            head.timeoutMicros = UInt64(max(1, timeout.nanoseconds / 1000))
            stream.deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                deadlineExceeded(streamID: id, timeout: timeout)
            }
        }
        var flags: FrameFlags = []
        var firstMessage: ByteBuffer?
        var queued: ByteBuffer?
        if let message = request.message {
            do {
                let (payload, messageFlags) = try prepareOutbound(message, flags: [])
                if connectionSendWindow > 0 {
                    firstMessage = payload
                    flags = messageFlags
                    stream.sendWindow -= Self.flowCost(payload)
                    connectionSendWindow -= Self.flowCost(payload)
                } else {
                    queued = payload
                    flags = messageFlags
                }
            } catch let error as RPCError {
                handle.inbox.finish(.failed(error))
                handle.state.value = .closed
                stream.deadlineTimer?.cancel()
                return
            } catch {
                handle.inbox.finish(.failed(RPCError(.internalError, "\(error)")))
                return
            }
        }
        let headFlags: FrameFlags = firstMessage != nil ? flags.union(.hasMessage) : []
        let endNow = request.endStream && queued == nil
        let payload: ByteBuffer
        do {
            payload = try PayloadCodec.encodeRequest(head: head, message: firstMessage, allocator: context.channel.allocator)
            guard payload.readableBytes <= peerSettings!.maxFrameSize else {
                throw RPCError(.resourceExhausted, "request of \(payload.readableBytes) bytes exceeds the server's maximum frame size of \(peerSettings!.maxFrameSize) bytes")
            }
        } catch {
            handle.inbox.finish(.failed(error as? RPCError ?? RPCError(.internalError, "\(error)")))
            handle.state.value = .closed
            stream.deadlineTimer?.cancel()
            return
        }
        if endNow { stream.localEnded = true }
        streams[id] = stream
        write(.request, flags: endNow ? headFlags.union(.endStream) : headFlags, streamID: id, payload: payload)
        if let queued {
            streams[id]!.pending.append(.message(queued, flags: request.endStream ? flags.union(.endStream) : flags, promise: nil))
            if request.endStream { streams[id]!.localEnded = true }
            blockedStreams.append(id)
        }
    }

    private func drainPendingOpens() {
        guard phase == .open else { return }
        while let next = pendingOpens.first, streams.count < peerSettings!.maxConcurrentStreams {
            pendingOpens.removeFirst()
            openNow(next)
        }
        flushIfNeeded()
    }

    /// Client: half-closes a stream (no more messages from this side).
    fileprivate func halfClose(handle: ClientStreamHandle) {
        guard case .open(let id) = handle.state.value, streams[id] != nil, !streams[id]!.localEnded else { return }
        streams[id]!.localEnded = true
        if streams[id]!.pending.isEmpty {
            write(.halfClose, flags: [], streamID: id, payload: ByteBuffer())
        } else {
            // Behind queued messages: mark the last one instead, so order is kept.
            let last = streams[id]!.pending.count - 1
            if case .message(let payload, let flags, let promise) = streams[id]!.pending[last] {
                streams[id]!.pending[last] = .message(payload, flags: flags.union(.endStream), promise: promise)
            }
        }
        flushIfNeeded()
    }

    /// Client: abandons a call (the caller stopped waiting or was cancelled).
    fileprivate func cancel(handle: ClientStreamHandle, reason: RPCError) {
        switch handle.state.value {
        case .notOpened:
            handle.state.value = .closed
            handle.inbox.finish(.failed(reason))
        case .open(let id):
            guard streams[id] != nil else { return }
            write(.cancel, flags: [], streamID: id, payload: ByteBuffer())
            failStream(id, reason, notifyPeer: false)
            flushIfNeeded()
        case .closed:
            break
        }
    }

    /// Server: stops accepting new calls, lets current ones finish, then closes (bounded by the grace period).
    func beginGracefulShutdown() {
        guard phase != .closed, shutdownTimer == nil else { return }
        phase = .goingAway
        var goAway = Flotilla_V1_GoAway()
        goAway.lastStreamID = lastPeerStreamID
        goAway.code = StatusCode.ok.rawValue
        goAway.message = "shutting down"
        writeProto(.goAway, streamID: 0, goAway)
        flushIfNeeded()
        shutdownTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(configuration.shutdownGracePeriod)) { [self] in
            fail(RPCError(.unavailable, "the call did not finish within the shutdown grace period"), goAway: nil)
        }
        closeIfDrained()
    }

    // MARK: - Timers

    private func deadlineExceeded(streamID id: UInt32, timeout: TimeAmount) {
        guard streams[id] != nil else { return }
        let error = RPCError(.deadlineExceeded, "deadline of \(Duration.nanoseconds(timeout.nanoseconds)) exceeded")
        if role == .client {
            write(.cancel, flags: [], streamID: id, payload: ByteBuffer())
        }
        failStream(id, error, notifyPeer: role == .server)
        flushIfNeeded()
    }

    private func scheduleKeepalive() {
        let interval = TimeAmount(configuration.keepaliveInterval)
        keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
            keepaliveTick()
        }
    }

    private func keepaliveTick() {
        guard phase != .closed else { return }
        let now = context.eventLoop.now
        if let since = pingOutstandingSince {
            if now - since >= TimeAmount(configuration.keepaliveTimeout) {
                let silence = Duration.nanoseconds((now - lastFrameReceivedAt).nanoseconds)
                return fail(
                    RPCError(.unavailable, "peer did not answer keepalive (silent for \(silence)); it is presumed dead"),
                    goAway: nil)
            }
        } else if now - lastFrameReceivedAt >= TimeAmount(configuration.keepaliveInterval) {
            var payload = context.channel.allocator.buffer(capacity: 8)
            payload.writeInteger(UInt64(now.uptimeNanoseconds))
            write(.ping, flags: [], streamID: 0, payload: payload)
            flushIfNeeded()
            pingOutstandingSince = now
        }
        let next = pingOutstandingSince == nil
            ? TimeAmount(configuration.keepaliveInterval) - (now - lastFrameReceivedAt)
            : TimeAmount(configuration.keepaliveTimeout) - (now - pingOutstandingSince!)
        keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: max(next, .milliseconds(10))) { [self] in
            keepaliveTick()
        }
    }

    // MARK: - Ending streams and the connection

    /// Ends a stream with an error: its inbox fails, its handler (server) is cancelled, its queued sends fail.
    private func failStream(_ id: UInt32, _ error: RPCError, notifyPeer: Bool) {
        guard let stream = streams[id] else { return }
        stream.inbox.finish(.failed(error))
        stream.lifecycle?.complete(.cancelled)
        for case .message(_, _, let promise) in stream.pending { promise?.fail(error) }
        streams[id]!.pending.removeAll()
        if notifyPeer {
            switch role {
            case .server: writeProto(.status, streamID: id, Flotilla_V1_Status(error))
            case .client: write(.cancel, flags: [], streamID: id, payload: ByteBuffer())
            }
        }
        removeStream(id)
    }

    private func removeStream(_ id: UInt32) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        stream.deadlineTimer?.cancel()
        // Writers still waiting for window learn the call is over instead of waiting for ever.
        let ended = RPCError(.cancelled, "the call has already ended")
        for case .message(_, _, let promise) in stream.pending { promise?.fail(ended) }
        creditConnection(stream.receivedBytes - stream.creditedBytes)
        if role == .client, let index = blockedStreams.firstIndex(of: id) { blockedStreams.remove(at: index) }
        if role == .client { drainPendingOpens() }
        closeIfDrained()
    }

    private func isKnownClosed(_ id: UInt32) -> Bool {
        role == .server ? id <= lastPeerStreamID : id < nextStreamID
    }

    private func closeIfDrained() {
        guard phase == .goingAway, streams.isEmpty, pendingOpens.isEmpty else { return }
        flushNow()
        phase = .closed
        shutdownTimer?.cancel()
        context.close(promise: nil)
    }

    /// A protocol violation by the peer: GOAWAY with the reason, then close.
    private func violation(_ message: String) {
        fail(RPCError(.invalidArgument, "protocol violation: \(message)"), goAway: .invalidArgument)
    }

    /// Ends the connection: fail every call with `error`, tell the peer why (GOAWAY) when `goAway` is set.
    private func fail(_ error: RPCError, goAway code: StatusCode?) {
        guard phase != .closed else { return }
        logger.debug("connection failed", metadata: ["error": "\(error)"])
        if let code {
            var goAway = Flotilla_V1_GoAway()
            goAway.lastStreamID = lastPeerStreamID
            goAway.code = code.rawValue
            goAway.message = error.message
            writeProto(.goAway, streamID: 0, goAway)
            flushNow()
        }
        closeReason = error
        tearDown(error)
        context.close(promise: nil)
    }

    private var tornDown = false
    private func tearDown(_ error: RPCError) {
        guard !tornDown else { return }
        tornDown = true
        phase = .closed
        handshakeTimer?.cancel()
        handshakeTimer = nil
        keepaliveTimer?.cancel()
        shutdownTimer?.cancel()
        if !readyCompleted {
            readyCompleted = true
            ready.fail(error)
        }
        for id in Array(streams.keys) { failStream(id, error, notifyPeer: false) }
        while let open = pendingOpens.popFirst() {
            open.handle.state.value = .closed
            open.handle.inbox.finish(.failed(error))
        }
        for timer in queuedDeadlines.values { timer.cancel() }
        queuedDeadlines = [:]
    }

    // MARK: - Frames out

    /// Compresses a message when that pays and the peer accepts it, and checks it fits the peer's frames.
    private func prepareOutbound(_ message: ByteBuffer, flags: FrameFlags) throws -> (ByteBuffer, FrameFlags) {
        guard let settings = peerSettings else { throw RPCError(.unavailable, "handshake not complete") }
        var payload = message
        var flags = flags
        if let threshold = configuration.compressionThreshold, settings.acceptsCompression,
           message.readableBytes >= threshold {
            let compressed = try PayloadCodec.compress(message, allocator: context.channel.allocator)
            if compressed.readableBytes < message.readableBytes {
                payload = compressed
                flags.insert(.compressed)
            }
        }
        guard payload.readableBytes <= settings.maxFrameSize else {
            throw RPCError(.resourceExhausted, "message of \(payload.readableBytes) bytes exceeds the peer's maximum frame size of \(settings.maxFrameSize) bytes")
        }
        return (payload, flags)
    }

    private func writeProto(_ type: FrameType, streamID: UInt32, _ message: some SwiftProtobufMessage) {
        do {
            let payload = try PayloadCodec.encode(message, allocator: context.channel.allocator)
            write(type, flags: [], streamID: streamID, payload: payload)
        } catch {
            logger.error("could not encode a frame", metadata: ["frame": "\(type)", "error": "\(error)"])
        }
    }

    /// Small payloads are copied behind the header (one buffer, one write); large ones go as their own buffer.
    private func write(_ type: FrameType, flags: FrameFlags, streamID: UInt32, payload: ByteBuffer) {
        guard context.channel.isActive || phase != .closed else { return }
        let size = payload.readableBytes
        if size <= 16 << 10 {
            var buffer = context.channel.allocator.buffer(capacity: Frame.headerSize + size)
            Frame.writeHeader(type: type, flags: flags, streamID: streamID, payloadSize: size, into: &buffer)
            var payload = payload
            buffer.writeBuffer(&payload)
            context.write(wrapOutboundOut(buffer), promise: nil)
        } else {
            var header = context.channel.allocator.buffer(capacity: Frame.headerSize)
            Frame.writeHeader(type: type, flags: flags, streamID: streamID, payloadSize: size, into: &header)
            context.write(wrapOutboundOut(header), promise: nil)
            context.write(wrapOutboundOut(payload), promise: nil)
        }
        needsFlush = true
    }

    /// Flushes soon rather than now: writes from many calls that reach the event loop in the same turn go out
    /// in one flush (one TLS record, one syscall) instead of one each. Inside a read, channelReadComplete
    /// flushes instead.
    private func flushIfNeeded() {
        guard needsFlush, !inReadLoop, !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flushNow()
        }
    }

    private var flushScheduled = false

    private func flushNow() {
        guard needsFlush else { return }
        needsFlush = false
        context.flush()
    }
}

import SwiftProtobuf
typealias SwiftProtobufMessage = SwiftProtobuf.Message

/// A client call's claim on a stream: not opened yet (queued), open with an id, or closed.
final class ClientStreamHandle: Sendable {
    enum State: Equatable, Sendable { case notOpened, open(UInt32), closed }
    let inbox: StreamInbox
    /// Only read or written on the connection's event loop.
    let state: NIOLoopBoundBox<State>

    init(port: ConnectionPort, reportThreshold: Int) {
        let state = NIOLoopBoundBox.makeBoxSendingValue(State.notOpened, eventLoop: port.eventLoop)
        self.state = state
        self.inbox = StreamInbox(reportThreshold: reportThreshold) { bytes in
            port.consumed(state: state, bytes: bytes)
        }
    }
}

/// The async side's way into a connection: every call hops to the connection's event loop.
struct ConnectionPort: Sendable {
    let eventLoop: EventLoop
    private let handler: NIOLoopBound<ConnectionHandler>

    init(handler: ConnectionHandler) {
        self.eventLoop = handler.context.eventLoop
        self.handler = NIOLoopBound(handler, eventLoop: handler.context.eventLoop)
    }

    private func onLoop(_ body: @escaping @Sendable (ConnectionHandler) -> Void) {
        if eventLoop.inEventLoop {
            body(handler.value)
        } else {
            let handler = self.handler
            eventLoop.execute { body(handler.value) }
        }
    }

    func send(_ message: ByteBuffer, streamID: UInt32, endStream: Bool) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        onLoop { $0.send(message, streamID: streamID, endStream: endStream, promise: promise) }
        return promise.futureResult
    }

    func send(_ message: ByteBuffer, handle: ClientStreamHandle, endStream: Bool) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        onLoop { handler in
            guard case .open(let id) = handle.state.value else {
                promise.fail(RPCError(.cancelled, "the call has already ended"))
                return
            }
            handler.send(message, streamID: id, endStream: endStream, promise: promise)
        }
        return promise.futureResult
    }

    func finish(streamID: UInt32, lastMessage: ByteBuffer?, status: Flotilla_V1_Status) {
        onLoop { $0.finish(streamID: streamID, lastMessage: lastMessage, status: status) }
    }

    func consumed(streamID: UInt32, bytes: Int) {
        onLoop { $0.consumed(streamID: streamID, bytes: bytes) }
    }

    func consumed(state: NIOLoopBoundBox<ClientStreamHandle.State>, bytes: Int) {
        onLoop { handler in
            guard case .open(let id) = state.value else { return }
            handler.consumed(streamID: id, bytes: bytes)
        }
    }

    func open(handle: ClientStreamHandle, head: Flotilla_V1_RequestHead, message: ByteBuffer?, endStream: Bool, timeout: TimeAmount?) {
        onLoop { $0.open(handle: handle, head: head, message: message, endStream: endStream, timeout: timeout) }
    }

    func halfClose(handle: ClientStreamHandle) {
        onLoop { $0.halfClose(handle: handle) }
    }

    func cancel(handle: ClientStreamHandle, reason: RPCError) {
        onLoop { $0.cancel(handle: handle, reason: reason) }
    }

    func beginGracefulShutdown() {
        onLoop { $0.beginGracefulShutdown() }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

public import NIOCore
import NIOConcurrencyHelpers
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 backend for load-balancer tests: answers `<name> xff=<X-Forwarded-For> path=<path>` with
/// keep-alive, and can be told to hang (accept requests, never answer) or to delay its answers.
public final class TestHTTPBackend: Sendable {
    public enum Behaviour: Sendable, Equatable {
        case answer
        /// Read requests, never answer (a hung process).
        case hang
        /// Answer after this many milliseconds.
        case delay(Int64)
    }

    public let name: String
    public let port: Int
    private let channel: any Channel
    private let state: NIOLockedValueBox<State>

    struct State {
        var behaviour: Behaviour = .answer
        var requests = 0
        var connections: [any Channel] = []
        var lastProxyHeader: [UInt8]?
    }

    public var requests: Int { state.withLockedValue { $0.requests } }
    public var behaviour: Behaviour {
        get { state.withLockedValue { $0.behaviour } }
        set { state.withLockedValue { $0.behaviour = newValue } }
    }

    private init(name: String, port: Int, channel: any Channel, state: NIOLockedValueBox<State>) {
        self.name = name
        self.port = port
        self.channel = channel
        self.state = state
    }

    public static func start(name: String, host: String = "127.0.0.1", port: Int = 0, group: any EventLoopGroup) async throws -> TestHTTPBackend {
        let state = NIOLockedValueBox(State())
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    state.withLockedValue { $0.connections.append(channel) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Responder(name: name, state: state))
                }
            }
            .bind(host: host, port: port).get()
        return TestHTTPBackend(name: name, port: channel.localAddress!.port!, channel: channel, state: state)
    }

    /// Stops listening and closes every open connection, answered or not (a process that died).
    public func kill() async {
        try? await channel.close()
        let connections = state.withLockedValue { $0.connections }
        for connection in connections {
            try? await connection.close()
        }
    }

    final class Responder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let name: String
        let state: NIOLockedValueBox<State>
        var head: HTTPRequestHead?

        init(name: String, state: NIOLockedValueBox<State>) {
            self.name = name
            self.state = state
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head else { return }
                let behaviour = state.withLockedValue { state in
                    state.requests += 1
                    return state.behaviour
                }
                let text = "\(name) xff=\(head.headers.first(name: "x-forwarded-for") ?? "") path=\(head.uri)\n"
                switch behaviour {
                case .hang: return
                case .answer: respond(context: context, text: text, keepAlive: head.isKeepAlive)
                case .delay(let millis):
                    let keepAlive = head.isKeepAlive
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(millis)) {
                        self.respond(context: context, text: text, keepAlive: keepAlive)
                    }
                }
            }
        }

        func respond(context: ChannelHandlerContext, text: String, keepAlive: Bool) {
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: String(text.utf8.count))
            if !keepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
        }
    }
}

/// A plain blocking HTTP/1.1 client for tests (one socket, keep-alive, Content-Length bodies), so the tests
/// exercise the balancer with nothing of NIO on the client side.
public final class TestHTTPClient {
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    public let host: String
    public let port: Int
    /// The local address to connect from (any 127.x.y.z works on loopback: distinct clients for ip-hash).
    public let source: String?

    public init(host: String = "127.0.0.1", port: Int, source: String? = nil) {
        self.host = host
        self.port = port
        self.source = source
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: String
    }

    public enum Failure: Error, CustomStringConvertible {
        case connect(Int32), closed, malformed(String)
        public var description: String {
            switch self {
            case .connect(let errno): "connect failed: errno \(errno)"
            case .closed: "connection closed before a full response"
            case .malformed(let text): "malformed response: \(text)"
            }
        }
    }

    /// Sends one GET (or `method`) on the kept-alive connection (opening one if needed) and reads the answer.
    public func request(_ path: String = "/", method: String = "GET", close: Bool = false, timeoutSeconds: Int = 10) throws -> Response {
        if fd < 0 { try open(timeoutSeconds: timeoutSeconds) }
        let text = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n\(close ? "Connection: close\r\n" : "")\r\n"
        let sent = text.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }
        guard sent > 0 else { reset(); throw Failure.closed }
        do {
            let response = try readResponse()
            if close || response.headers.contains(where: { $0.0.lowercased() == "connection" && $0.1.lowercased() == "close" }) { reset() }
            return response
        } catch {
            reset()
            throw error
        }
    }

    public func reset() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        buffer = []
    }

    private func open(timeoutSeconds: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // Bounds connect and send too (Linux applies the send timeout to connect): an unreachable host fails in time.
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            _ = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            let error = errno
            reset()
            throw Failure.connect(error)
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 16_384)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw Failure.closed }
        buffer.append(contentsOf: chunk[0..<count])
    }

    private func readResponse() throws -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headEnd: Int?
        while headEnd == nil {
            if buffer.count >= 4 {
                headEnd = (0...(buffer.count - 4)).first { buffer[$0..<($0 + 4)].elementsEqual(separator) }
            }
            if headEnd == nil { try fill() }
        }
        let headText = String(decoding: buffer[0..<headEnd!], as: UTF8.self)
        buffer.removeFirst(headEnd! + 4)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure.malformed(headText) }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
        while buffer.count < length { try fill() }
        let body = String(decoding: buffer[0..<length], as: UTF8.self)
        buffer.removeFirst(length)
        return Response(status: status, headers: headers, body: body)
    }
}

/// A TCP backend for load-balancer tests: echoes what it reads prefixed by nothing, answers `bye from NAME` when
/// the client ends its side (half-close), then closes; keeps the first bytes it received for inspection.
public final class TestTCPBackend: Sendable {
    public let name: String
    public let port: Int
    private let channel: any Channel
    private let received: NIOLockedValueBox<[[UInt8]]>

    /// The bytes each connection sent, in order of arrival (the first 4 KiB of each).
    public var connections: [[UInt8]] { received.withLockedValue { $0 } }

    private init(name: String, port: Int, channel: any Channel, received: NIOLockedValueBox<[[UInt8]]>) {
        self.name = name
        self.port = port
        self.channel = channel
        self.received = received
    }

    public static func start(name: String, group: any EventLoopGroup) async throws -> TestTCPBackend {
        let received = NIOLockedValueBox<[[UInt8]]>([])
        let channel = try await ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let index = received.withLockedValue { list in
                        list.append([])
                        return list.count - 1
                    }
                    try channel.pipeline.syncOperations.addHandler(Echo(name: name, index: index, received: received))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TestTCPBackend(name: name, port: channel.localAddress!.port!, channel: channel, received: received)
    }

    public func stop() async { try? await channel.close() }

    final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let name: String
        let index: Int
        let received: NIOLockedValueBox<[[UInt8]]>

        init(name: String, index: Int, received: NIOLockedValueBox<[[UInt8]]>) {
            self.name = name
            self.index = index
            self.received = received
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            received.withLockedValue { list in
                if list[index].count < 4096 { list[index].append(contentsOf: bytes.readableBytesView.prefix(4096 - list[index].count)) }
            }
            context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "bye from \(name)"))).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        }
    }
}

/// A blocking TCP exchange for tests: connect, send, optionally half-close, read until the peer closes.
public enum TestTCPClient {
    /// Returns what came back before the peer closed, or nil if the connection failed or was reset.
    public static func exchange(port: Int, send text: String, halfClose: Bool = true, timeoutSeconds: Int = 10) -> String? {
        guard let fd = connect(port: port, timeoutSeconds: timeoutSeconds) else { return nil }
        defer { Glibc.close(fd) }
        let sent = text.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }
        guard sent == text.utf8.count else { return nil }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            if count < 0 { return nil }
            reply.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: reply, as: UTF8.self)
    }

    /// A blocking socket connected to 127.0.0.1:`port`, reads limited to `timeoutSeconds`; nil if refused.
    public static func connect(port: Int, timeoutSeconds: Int = 10) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            return nil
        }
        return fd
    }
}

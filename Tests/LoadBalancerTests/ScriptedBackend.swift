import NIOCore
import NIOPosix
import Synchronization

/// A backend that answers with exactly the bytes a test gives it and records exactly the bytes it got, for
/// checking what the balancer puts on the wire. It finds where a request ends by itself (a naive reading of
/// Content-Length or a chunked body's `0\r\n\r\n`, independent of the balancer's parser).
final class ScriptedBackend: Sendable {
    let port: Int
    private let channel: any Channel
    private let log: RequestLog

    /// Every request as it arrived, in order.
    var requests: [String] { log.entries.withLock { $0 } }

    private init(port: Int, channel: any Channel, log: RequestLog) {
        self.port = port
        self.channel = channel
        self.log = log
    }

    /// Answers every request with `response`; closes the connection after it when `close`.
    static func start(group: any EventLoopGroup, response: String, close: Bool = false) async throws -> ScriptedBackend {
        let log = RequestLog()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Answerer(response: response, close: close, log: log))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ScriptedBackend(port: channel.localAddress!.port!, channel: channel, log: log)
    }

    func stop() async { try? await channel.close() }

    /// The length of the request at the start of `bytes`, or nil while it is incomplete.
    static func requestLength(_ bytes: [UInt8]) -> Int? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { return nil }
        let head = text[..<headEnd.lowerBound].lowercased()
        let headLength = text.utf8.distance(from: text.startIndex, to: headEnd.upperBound)
        if head.contains("transfer-encoding: chunked") {
            // The last chunk, then the trailer section up to its empty line.
            let lastChunk = text.index(headEnd.lowerBound, offsetBy: 0)
            guard let last = text[lastChunk...].range(of: "\r\n0\r\n"),
                  let end = text[text.index(last.lowerBound, offsetBy: 3)...].range(of: "\r\n\r\n")
            else { return nil }
            return text.utf8.distance(from: text.startIndex, to: end.upperBound)
        }
        if let field = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
           let length = Int(field.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) {
            return bytes.count >= headLength + length ? headLength + length : nil
        }
        return headLength
    }

    final class RequestLog: Sendable {
        let entries = Mutex<[String]>([])
    }

    final class Answerer: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let response: String
        let close: Bool
        let log: RequestLog
        var pending: [UInt8] = []

        init(response: String, close: Bool, log: RequestLog) {
            self.response = response
            self.close = close
            self.log = log
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            pending += Array(buffer: unwrapInboundIn(data))
            while let length = ScriptedBackend.requestLength(pending) {
                let request = String(decoding: pending[..<length], as: UTF8.self)
                pending.removeFirst(length)
                log.entries.withLock { $0.append(request) }
                let written = context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)))
                if close {
                    written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                    return
                }
            }
        }
    }
}

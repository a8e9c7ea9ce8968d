import NIOCore

/// DNS over TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by its length as two bytes. The length
/// bounds a message to 65,535 bytes, and a message is only sliced out once all its bytes arrived, so nothing is
/// allocated on a length's word alone.
struct DNSTCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        guard let message = buffer.readSlice(length: Int(length)) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(message))
        return .continue
    }

    /// `message` with its two-byte length in front (a message is never longer than 65,535 bytes).
    static func frame(_ message: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(2 + message.count)
        buffer.writeInteger(UInt16(clamping: message.count))
        buffer.writeBytes(message.prefix(Int(UInt16.max)))
        return buffer
    }
}

/// Closes a TCP connection that has been quiet for the `IdleStateHandler`'s read timeout.
final class CloseWhenIdleHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

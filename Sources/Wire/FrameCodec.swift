public import NIOCore

/// Why a byte stream is not a valid sequence of frames. Every case ends the connection (GOAWAY, close).
public enum FrameDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The length field claims more than the negotiated maximum. Nothing of that size is allocated.
    case frameTooLarge(payloadSize: Int, maximum: Int)
    /// The length field is smaller than the 6 header bytes it must count.
    case lengthTooSmall(Int)
    /// The type byte names no frame type of this protocol version.
    case unknownFrameType(UInt8)

    public var description: String {
        switch self {
        case .frameTooLarge(let size, let max):
            "frame payload of \(size) bytes exceeds the maximum of \(max) bytes"
        case .lengthTooSmall(let length):
            "frame length \(length) is smaller than the 6-byte header it must include"
        case .unknownFrameType(let type):
            "unknown frame type 0x\(String(type, radix: 16))"
        }
    }
}

/// Parses frames out of a byte stream. Pure: no channel, no I/O, so it is drip-fed and fuzzed in tests.
///
/// The length is checked against `maxPayloadSize` before anything else is read or allocated; the payload
/// is a slice of the input buffer (no copy).
public struct FrameDecoder: Sendable {
    public var maxPayloadSize: Int

    public init(maxPayloadSize: Int) {
        self.maxPayloadSize = maxPayloadSize
    }

    /// Returns the next complete frame, or nil if `buffer` does not yet hold one (nothing is consumed then).
    public func nextFrame(from buffer: inout ByteBuffer) throws(FrameDecodingError) -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let counted = Int(length)
        guard counted >= Frame.lengthCountedHeaderBytes else { throw .lengthTooSmall(counted) }
        let payloadSize = counted - Frame.lengthCountedHeaderBytes
        guard payloadSize <= maxPayloadSize else {
            throw .frameTooLarge(payloadSize: payloadSize, maximum: maxPayloadSize)
        }
        // The type is validated as soon as it arrives, so garbage is refused without waiting for a body.
        guard let typeByte = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self) else { return nil }
        guard let type = FrameType(rawValue: typeByte) else { throw .unknownFrameType(typeByte) }
        guard buffer.readableBytes >= 4 + counted else { return nil }

        buffer.moveReaderIndex(forwardBy: 5)
        let flags = FrameFlags(rawValue: buffer.readInteger(as: UInt8.self)!)
        let streamID = buffer.readInteger(as: UInt32.self)!
        let payload = buffer.readSlice(length: payloadSize)!
        return Frame(type: type, flags: flags, streamID: streamID, payload: payload)
    }
}

extension Frame {
    /// Appends this frame's wire form to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        Frame.writeHeader(
            type: type, flags: flags, streamID: streamID, payloadSize: payload.readableBytes, into: &buffer)
        var payload = self.payload
        buffer.writeBuffer(&payload)
    }

    /// Writes only the 10-byte header, for callers that write the payload themselves (no intermediate copy).
    public static func writeHeader(
        type: FrameType, flags: FrameFlags, streamID: UInt32, payloadSize: Int, into buffer: inout ByteBuffer
    ) {
        buffer.writeMultipleIntegers(
            UInt32(payloadSize + lengthCountedHeaderBytes), type.rawValue, flags.rawValue, streamID)
    }

    /// The wire form of this frame in a new buffer.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Frame.headerSize + payload.readableBytes)
        encode(into: &buffer)
        return buffer
    }
}

/// `ByteToMessageDecoder` adapter around `FrameDecoder`, for the channel pipeline.
public struct FrameToMessageDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame
    let decoder: FrameDecoder

    public init(maxPayloadSize: Int) {
        self.decoder = FrameDecoder(maxPayloadSize: maxPayloadSize)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try decoder.nextFrame(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        // A partial frame at EOF is simply dropped: the peer is gone, the connection is closing anyway.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// `MessageToByteEncoder` for frames.
public struct FrameToByteEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame
    public init() {}
    public func encode(data: Frame, out: inout ByteBuffer) throws {
        data.encode(into: &out)
    }
}

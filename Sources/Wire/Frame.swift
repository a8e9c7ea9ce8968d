public import NIOCore

/// The kind of a frame: the byte after the length. See docs/protocol.md, "Frame types".
public enum FrameType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Handshake: protocol version, limits, capabilities. First frame each way, stream 0.
    case hello = 0x01
    /// Opens a stream (client to server): a `RequestHead`, then optionally the first message.
    case request = 0x02
    /// One message on an open stream, either direction.
    case message = 0x03
    /// Ends a stream (server to client) with a `Status`.
    case status = 0x04
    /// The client abandons a stream; the server cancels its handler.
    case cancel = 0x05
    /// Keepalive probe, 8 opaque bytes, stream 0.
    case ping = 0x06
    /// Answer to PING with the same 8 bytes.
    case pong = 0x07
    /// The sender will accept no new streams; a `GoAway` says up to which stream it still works.
    case goAway = 0x08
    /// Flow-control credit: a u32 byte count for a stream, or for the connection on stream 0.
    case windowUpdate = 0x09
    /// The client will send no more messages on this stream (for a half-close that carries no message).
    case halfClose = 0x0A

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .request: "REQUEST"
        case .message: "MESSAGE"
        case .status: "STATUS"
        case .cancel: "CANCEL"
        case .ping: "PING"
        case .pong: "PONG"
        case .goAway: "GOAWAY"
        case .windowUpdate: "WINDOW_UPDATE"
        case .halfClose: "HALF_CLOSE"
        }
    }
}

/// Per-frame flags. Bits not defined here must be sent as 0 and are ignored on receipt.
public struct FrameFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// On REQUEST or MESSAGE from the client: it will send no more messages on this stream (half-close).
    public static let endStream = FrameFlags(rawValue: 0x01)
    /// The message bytes of this frame are zlib-compressed (RFC 1950). Only sent to a peer whose HELLO
    /// listed the "zlib" capability.
    public static let compressed = FrameFlags(rawValue: 0x02)
    /// On REQUEST: the payload ends with the call's first message (which may be empty: a protobuf message
    /// with every field at its default encodes to zero bytes). Without it the REQUEST only opens the stream.
    public static let hasMessage = FrameFlags(rawValue: 0x04)
}

/// One protocol frame: `length u32 | type u8 | flags u8 | stream id u32 | payload`.
///
/// `length` counts everything after itself (6 header bytes plus the payload), so a frame occupies
/// `4 + length` bytes on the wire.
public struct Frame: Sendable, Equatable {
    public var type: FrameType
    public var flags: FrameFlags
    public var streamID: UInt32
    public var payload: ByteBuffer

    public init(type: FrameType, flags: FrameFlags = [], streamID: UInt32, payload: ByteBuffer = ByteBuffer()) {
        self.type = type
        self.flags = flags
        self.streamID = streamID
        self.payload = payload
    }

    /// Bytes before the payload: length (4), type (1), flags (1), stream id (4).
    public static let headerSize = 10
    /// Bytes the length field counts besides the payload: type, flags, stream id.
    static let lengthCountedHeaderBytes = 6
}

public import NIOCore
public import SwiftProtobuf
import CompressNIO

/// Encodes and decodes the payloads of the frames that carry protobuf: REQUEST heads, STATUS, GOAWAY, HELLO,
/// and message bodies with optional zlib compression.
public enum PayloadCodec {
    /// Serializes a protobuf message into a buffer.
    public static func encode(_ message: some SwiftProtobuf.Message, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        let bytes: [UInt8] = try message.serializedBytes()
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }

    /// Decodes a protobuf message from the readable bytes of a buffer.
    public static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, from buffer: ByteBuffer) throws -> M {
        try M(serializedBytes: buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? [])
    }

    // MARK: - REQUEST payload: head length (u16) | RequestHead | optional first message

    /// The largest encoded `RequestHead`, bounded by its u16 length prefix.
    public static let maxRequestHeadSize = Int(UInt16.max)

    public static func encodeRequest(
        head: Flotilla_V1_RequestHead, message: ByteBuffer?, allocator: ByteBufferAllocator
    ) throws -> ByteBuffer {
        let headBytes: [UInt8] = try head.serializedBytes()
        guard headBytes.count <= maxRequestHeadSize else {
            throw RPCError(.resourceExhausted, "request head of \(headBytes.count) bytes exceeds \(maxRequestHeadSize)")
        }
        var buffer = allocator.buffer(capacity: 2 + headBytes.count + (message?.readableBytes ?? 0))
        buffer.writeInteger(UInt16(headBytes.count))
        buffer.writeBytes(headBytes)
        if var message { buffer.writeBuffer(&message) }
        return buffer
    }

    /// Splits a REQUEST payload into its head and the (possibly empty) first message. Throws a
    /// human-readable reason when the payload is truncated or the head does not decode.
    public static func decodeRequest(
        _ payload: ByteBuffer, hasMessage: Bool = true
    ) throws -> (head: Flotilla_V1_RequestHead, message: ByteBuffer?) {
        var payload = payload
        guard let headLength = payload.readInteger(as: UInt16.self) else {
            throw RPCError(.invalidArgument, "REQUEST payload of \(payload.readableBytes) bytes is too short for its head length")
        }
        guard let headBytes = payload.readSlice(length: Int(headLength)) else {
            throw RPCError(.invalidArgument, "REQUEST head claims \(headLength) bytes but only \(payload.readableBytes) follow")
        }
        let head: Flotilla_V1_RequestHead
        do {
            head = try decode(Flotilla_V1_RequestHead.self, from: headBytes)
        } catch {
            throw RPCError(.invalidArgument, "REQUEST head does not decode: \(error)")
        }
        guard !head.method.isEmpty else { throw RPCError(.invalidArgument, "REQUEST head names no method") }
        guard hasMessage || payload.readableBytes == 0 else {
            throw RPCError(.invalidArgument, "REQUEST carries \(payload.readableBytes) bytes after its head but no HAS_MESSAGE flag")
        }
        return (head, hasMessage ? payload : nil)
    }

    // MARK: - Compression

    /// zlib-compresses `buffer`.
    public static func compress(_ buffer: ByteBuffer, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var input = buffer
        return try input.compress(with: .zlib(), allocator: allocator)
    }

    /// Inflates a COMPRESSED payload, refusing to produce more than `maxSize` bytes (a small frame must not
    /// be able to inflate into an arbitrarily large allocation).
    public static func decompress(_ buffer: ByteBuffer, maxSize: Int, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var input = buffer
        do {
            return try input.decompress(with: .zlib(), maxSize: maxSize, allocator: allocator)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            throw RPCError(.resourceExhausted, "compressed message inflates beyond the maximum of \(maxSize) bytes")
        } catch {
            throw RPCError(.invalidArgument, "compressed message is not valid zlib data: \(error)")
        }
    }
}

extension Flotilla_V1_Status {
    /// The wire form of an RPC outcome.
    public init(_ error: RPCError) {
        self.init()
        self.code = error.code.rawValue
        self.message = error.message
        self.leaderAddress = error.leaderAddress ?? ""
    }

    public static var ok: Flotilla_V1_Status { Flotilla_V1_Status() }

    /// nil when the status is OK, otherwise the error it reports.
    public var error: RPCError? {
        guard code != StatusCode.ok.rawValue else { return nil }
        return RPCError(StatusCode(rawValue: code), message, leaderAddress: leaderAddress.isEmpty ? nil : leaderAddress)
    }
}

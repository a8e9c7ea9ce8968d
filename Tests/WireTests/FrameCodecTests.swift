import NIOCore
import ClusterModel
import TestSupport
import Testing
@testable import Wire

@Suite("Frame codec")
struct FrameCodecTests {
    let decoder = FrameDecoder(maxPayloadSize: 1 << 20)

    static func sampleFrames() -> [Frame] {
        var frames: [Frame] = []
        for type in FrameType.allCases {
            frames.append(Frame(type: type, flags: [], streamID: 0, payload: ByteBuffer()))
            frames.append(Frame(
                type: type, flags: [.endStream, .compressed], streamID: UInt32.max,
                payload: ByteBuffer(bytes: Array(0..<200).map { UInt8($0 % 256) })))
        }
        frames.append(Frame(type: .message, streamID: 7, payload: ByteBuffer(repeating: 0xAB, count: 70_000)))
        return frames
    }

    @Test("every frame type round-trips through encode and decode")
    func roundTrip() throws {
        for frame in Self.sampleFrames() {
            var buffer = frame.encoded()
            #expect(buffer.readableBytes == Frame.headerSize + frame.payload.readableBytes)
            let decoded = try decoder.nextFrame(from: &buffer)
            #expect(decoded == frame)
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("the header is length, type, flags, stream id, big endian")
    func headerLayout() {
        let frame = Frame(type: .request, flags: [.endStream], streamID: 0x0102_0304, payload: ByteBuffer(bytes: [0xFF, 0xEE]))
        let bytes = Array(frame.encoded().readableBytesView)
        #expect(bytes == [0, 0, 0, 8, 0x02, 0x01, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xEE])
    }

    @Test("a decoder drip-fed one byte at a time yields the same frames")
    func dripFed() throws {
        let frames = Self.sampleFrames()
        var all = ByteBuffer()
        for frame in frames { frame.encode(into: &all) }
        var input = ByteBuffer()
        var decoded: [Frame] = []
        for byte in all.readableBytesView {
            input.writeInteger(byte)
            while let frame = try decoder.nextFrame(from: &input) {
                decoded.append(frame)
            }
        }
        #expect(decoded == frames)
        #expect(input.readableBytes == 0)
    }

    @Test("frames merged into one read are all decoded, in order")
    func merged() throws {
        let frames = Self.sampleFrames()
        var all = ByteBuffer()
        for frame in frames { frame.encode(into: &all) }
        var decoded: [Frame] = []
        while let frame = try decoder.nextFrame(from: &all) { decoded.append(frame) }
        #expect(decoded == frames)
    }

    @Test("an incomplete frame consumes nothing")
    func incomplete() throws {
        var buffer = Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 1, count: 100)).encoded()
        var partial = buffer.readSlice(length: 50)!
        #expect(try decoder.nextFrame(from: &partial) == nil)
        #expect(partial.readableBytes == 50)
    }

    // MARK: - Malformed input

    @Test("a frame over the maximum is refused from its length alone, before its bytes arrive")
    func tooLarge() {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(1 << 31))  // claims 2 GiB
        buffer.writeInteger(FrameType.message.rawValue)
        #expect(throws: FrameDecodingError.frameTooLarge(payloadSize: (1 << 31) - 6, maximum: 1 << 20)) {
            try decoder.nextFrame(from: &buffer)
        }
        #expect(buffer.capacity < 1024)
    }

    @Test("a frame exactly at the maximum is accepted, one byte more is not")
    func boundary() throws {
        let small = FrameDecoder(maxPayloadSize: 100)
        var ok = Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 0, count: 100)).encoded()
        #expect(try small.nextFrame(from: &ok) != nil)
        var tooBig = Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 0, count: 101)).encoded()
        #expect(throws: FrameDecodingError.frameTooLarge(payloadSize: 101, maximum: 100)) {
            try small.nextFrame(from: &tooBig)
        }
    }

    @Test("an unknown frame type is refused as soon as its type byte arrives")
    func unknownType() {
        var buffer = ByteBuffer(bytes: [0, 0, 0, 6, 0x7F])
        #expect(throws: FrameDecodingError.unknownFrameType(0x7F)) { try decoder.nextFrame(from: &buffer) }
    }

    @Test("a length smaller than the header is refused")
    func lengthTooSmall() {
        var buffer = ByteBuffer(bytes: [0, 0, 0, 5, 1, 0, 0, 0, 0])
        #expect(throws: FrameDecodingError.lengthTooSmall(5)) { try decoder.nextFrame(from: &buffer) }
    }

    @Test("a truncated or garbage REQUEST payload gives a clear error, not a crash")
    func garbageRequest() {
        #expect(throws: RPCError.self) { try PayloadCodec.decodeRequest(ByteBuffer(bytes: [0])) }
        #expect(throws: RPCError.self) { try PayloadCodec.decodeRequest(ByteBuffer(bytes: [0, 10, 1, 2])) }
        #expect(throws: RPCError.self) { try PayloadCodec.decodeRequest(ByteBuffer(bytes: [0, 3, 0xFF, 0xFF, 0xFF])) }
        #expect(throws: RPCError.self) { try PayloadCodec.decodeRequest(ByteBuffer(bytes: [0, 0])) }  // no method
    }

    @Test("REQUEST payload round-trips head and message")
    func requestPayload() throws {
        var head = Flotilla_V1_RequestHead()
        head.method = "flotilla.v1.Echo/Echo"
        head.timeoutMicros = 1_500_000
        head.metadata = ["request-id": "42"]
        let payload = try PayloadCodec.encodeRequest(head: head, message: ByteBuffer(bytes: [1, 2, 3]), allocator: .init())
        let (decodedHead, message) = try PayloadCodec.decodeRequest(payload)
        #expect(decodedHead == head)
        #expect(message == ByteBuffer(bytes: [1, 2, 3]))
    }

    @Test("compressed payloads round-trip, and inflating past the limit is refused")
    func compression() throws {
        let original = ByteBuffer(repeating: 0x41, count: 100_000)
        let compressed = try PayloadCodec.compress(original, allocator: .init())
        #expect(compressed.readableBytes < 2_000)
        #expect(try PayloadCodec.decompress(compressed, maxSize: 100_000, allocator: .init()) == original)
        #expect(throws: RPCError.self) { try PayloadCodec.decompress(compressed, maxSize: 10_000, allocator: .init()) }
        #expect(throws: RPCError.self) {
            try PayloadCodec.decompress(ByteBuffer(bytes: [1, 2, 3, 4, 5]), maxSize: 1000, allocator: .init())
        }
    }

    @Test("100,000 seeded random byte strings never crash the decoder")
    func fuzz() {
        var rng = SplitMix64(seed: 0xF107_111A)
        let small = FrameDecoder(maxPayloadSize: 4096)
        var frames = 0
        var errors = 0
        for _ in 0..<100_000 {
            let count = Int(rng.next() % 64)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            // Half the inputs start with a plausible length so the decoder gets past the first checks.
            if count >= 5 && rng.next() % 2 == 0 {
                bytes[0] = 0; bytes[1] = 0; bytes[2] = 0
                bytes[3] = UInt8(6 + rng.next() % 32)
                bytes[4] = UInt8(1 + rng.next() % 10)
            }
            var buffer = ByteBuffer(bytes: bytes)
            do {
                while let frame = try small.nextFrame(from: &buffer) {
                    frames += 1
                    if frame.type == .request { _ = try? PayloadCodec.decodeRequest(frame.payload) }
                    if frame.type == .hello { _ = try? PayloadCodec.decode(Flotilla_V1_Hello.self, from: frame.payload) }
                    if frame.type == .status { _ = try? PayloadCodec.decode(Flotilla_V1_Status.self, from: frame.payload) }
                    if frame.type == .goAway { _ = try? PayloadCodec.decode(Flotilla_V1_GoAway.self, from: frame.payload) }
                }
            } catch {
                errors += 1
            }
        }
        // Both paths were exercised: some inputs decode, some are refused.
        #expect(frames > 1_000)
        #expect(errors > 1_000)
    }
}


import ClusterModel
import Logging
import NIOCore
import NIOEmbedded
import TestSupport
import Testing
@testable import Transport
@testable import Wire

/// A server-side connection driven byte by byte on an EmbeddedChannel: what a misbehaving peer can do to it.
/// Each violation must end in a GOAWAY with a reason and a closed connection, never a crash.
@Suite("Protocol robustness")
struct ProtocolRobustnessTests {
    static let peer = PeerIdentity(nodeID: NodeID("peer"), role: .agent)

    final class Harness {
        let channel: EmbeddedChannel
        let loop: EmbeddedEventLoop
        let configuration: TransportConfiguration

        init(configuration: TransportConfiguration = .init(), role: ConnectionHandler.Role = .server) throws {
            self.configuration = configuration
            loop = EmbeddedEventLoop()
            channel = EmbeddedChannel(loop: loop)
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(FrameToMessageDecoder(maxPayloadSize: configuration.maxFrameSize)))
            try channel.pipeline.syncOperations.addHandler(ConnectionHandler(
                role: role, configuration: configuration, identification: .fixed(ProtocolRobustnessTests.peer),
                eventLoop: loop, logger: Logger(label: "test")))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        /// Everything the handler wrote, as frames.
        func sentFrames() throws -> [Frame] {
            loop.run()  // deferred flushes
            var bytes = ByteBuffer()
            while var chunk = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&chunk) }
            var frames: [Frame] = []
            let decoder = FrameDecoder(maxPayloadSize: 1 << 24)
            while let frame = try decoder.nextFrame(from: &bytes) { frames.append(frame) }
            return frames
        }

        func send(_ frame: Frame) throws {
            try channel.writeInbound(frame.encoded())
        }

        func sendRaw(_ bytes: [UInt8]) throws {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        }

        func hello(version: UInt32 = ProtocolVersion.current, maxStreams: UInt32 = 0) throws -> Frame {
            var hello = Flotilla_V1_Hello()
            hello.protocolVersion = version
            hello.maxFrameSize = 1 << 20
            hello.initialStreamWindow = 64 << 10
            hello.connectionWindow = 1 << 20
            hello.maxConcurrentStreams = maxStreams
            hello.software = "test-peer"
            return Frame(type: .hello, streamID: 0, payload: try PayloadCodec.encode(hello, allocator: .init()))
        }

        func request(stream: UInt32, method: String = "flotilla.v1.Echo/Echo", body: [UInt8] = [], end: Bool = true) throws -> Frame {
            var head = Flotilla_V1_RequestHead()
            head.method = method
            let payload = try PayloadCodec.encodeRequest(head: head, message: ByteBuffer(bytes: body), allocator: .init())
            return Frame(type: .request, flags: end ? [.endStream, .hasMessage] : [.hasMessage], streamID: stream, payload: payload)
        }

        /// The GOAWAY the handler sent, decoded.
        func goAway() throws -> Flotilla_V1_GoAway? {
            guard let frame = try sentFrames().first(where: { $0.type == .goAway }) else { return nil }
            return try PayloadCodec.decode(Flotilla_V1_GoAway.self, from: frame.payload)
        }

        /// Runs a step that may make the handler close the channel; a closed EmbeddedChannel throws on write.
        func tolerateClose(_ body: () throws -> Void) {
            do { try body() } catch {}
        }
    }

    @Test("each side sends HELLO first, announcing its version and limits")
    func helloFirst() throws {
        var configuration = TransportConfiguration()
        configuration.maxConcurrentStreams = 77
        let harness = try Harness(configuration: configuration)
        let frames = try harness.sentFrames()
        #expect(frames.first?.type == .hello)
        let hello = try PayloadCodec.decode(Flotilla_V1_Hello.self, from: frames[0].payload)
        #expect(hello.protocolVersion == ProtocolVersion.current)
        #expect(hello.maxConcurrentStreams == 77)
        #expect(hello.maxFrameSize == UInt32(configuration.maxFrameSize))
    }

    @Test("a protocol version mismatch is refused with a message naming both versions")
    func versionMismatch() throws {
        let harness = try Harness()
        _ = try harness.sentFrames()
        harness.tolerateClose { try harness.send(try harness.hello(version: 99)) }
        let goAway = try #require(try harness.goAway())
        #expect(StatusCode(rawValue: goAway.code) == .failedPrecondition)
        #expect(goAway.message.contains("protocol 1"))
        #expect(goAway.message.contains("speaks 99"))
        #expect(!harness.channel.isActive)
    }

    @Test("a frame over the maximum size gets GOAWAY and a closed connection")
    func oversizedFrame() throws {
        var configuration = TransportConfiguration()
        configuration.maxFrameSize = 4096
        let harness = try Harness(configuration: configuration)
        try harness.send(try harness.hello())
        _ = try harness.sentFrames()
        // Only the header of a frame claiming 1 GiB: refused without waiting for (or allocating) the body.
        harness.tolerateClose { try harness.sendRaw([0x40, 0, 0, 0, FrameType.message.rawValue, 0, 0, 0, 0, 1]) }
        let goAway = try #require(try harness.goAway())
        #expect(goAway.message.contains("exceeds the maximum of 4096 bytes"))
        #expect(!harness.channel.isActive)
    }

    @Test("an unknown frame type gets GOAWAY")
    func unknownFrameType() throws {
        let harness = try Harness()
        try harness.send(try harness.hello())
        _ = try harness.sentFrames()
        harness.tolerateClose { try harness.sendRaw([0, 0, 0, 6, 0xEE, 0, 0, 0, 0, 0]) }
        #expect(try harness.goAway()?.message.contains("unknown frame type 0xee") == true)
        #expect(!harness.channel.isActive)
    }

    @Test("anything but HELLO as the first frame gets GOAWAY")
    func requestBeforeHello() throws {
        let harness = try Harness()
        _ = try harness.sentFrames()
        harness.tolerateClose { try harness.send(try harness.request(stream: 1)) }
        #expect(try harness.goAway()?.message.contains("expected HELLO") == true)
        #expect(!harness.channel.isActive)
    }

    @Test("a garbage HELLO or REQUEST payload gets GOAWAY, not a crash")
    func garbagePayloads() throws {
        let first = try Harness()
        _ = try first.sentFrames()
        first.tolerateClose { try first.send(Frame(type: .hello, streamID: 0, payload: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]))) }
        #expect(try first.goAway()?.message.contains("HELLO does not decode") == true)

        let second = try Harness()
        try second.send(try second.hello())
        _ = try second.sentFrames()
        second.tolerateClose { try second.send(Frame(type: .request, streamID: 1, payload: ByteBuffer(bytes: [0, 9, 1]))) }
        #expect(try second.goAway()?.message.contains("REQUEST head claims 9 bytes") == true)
        #expect(!second.channel.isActive)
    }

    @Test("a reused stream id gets GOAWAY")
    func reusedStreamID() throws {
        let harness = try Harness()
        try harness.send(try harness.hello())
        try harness.send(try harness.request(stream: 5))
        _ = try harness.sentFrames()
        harness.tolerateClose { try harness.send(try harness.request(stream: 5)) }
        #expect(try harness.goAway()?.message.contains("reuses stream id 5") == true)
        #expect(!harness.channel.isActive)
    }

    @Test("a peer that sends nothing after connecting is closed at the handshake timeout (default 10 s)")
    func slowloris() throws {
        let harness = try Harness()
        // Half a frame, then silence. Keepalive does not run before the handshake, so the timeout decides.
        try harness.sendRaw([0, 0, 0])
        harness.loop.advanceTime(by: .milliseconds(9_900))
        #expect(harness.channel.isActive)
        harness.loop.advanceTime(by: .milliseconds(200))
        #expect(!harness.channel.isActive)
    }

    @Test("a compressed message that is not zlib ends its call with INVALID_ARGUMENT, not the process")
    func corruptCompressedMessage() throws {
        let harness = try Harness()
        try harness.send(try harness.hello())
        try harness.send(try harness.request(stream: 1, end: false))
        _ = try harness.channel.readInbound(as: IncomingCall.self)
        _ = try harness.sentFrames()
        try harness.send(Frame(
            type: .message, flags: [.compressed, .endStream], streamID: 1, payload: ByteBuffer(bytes: [9, 9, 9, 9])))
        let status = try #require(try harness.sentFrames().first { $0.type == .status && $0.streamID == 1 })
        let decoded = try PayloadCodec.decode(Flotilla_V1_Status.self, from: status.payload)
        #expect(StatusCode(rawValue: decoded.code) == .invalidArgument)
        #expect(harness.channel.isActive)
        // A frame for the ended stream is dropped quietly; the connection still works.
        try harness.send(Frame(type: .message, streamID: 1, payload: ByteBuffer(bytes: [1])))
        try harness.send(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 1])))
        #expect(try harness.sentFrames().contains { $0.type == .pong })
    }

    @Test("empty messages count against the window, so a flood of them is bounded")
    func emptyMessageFlood() throws {
        var configuration = TransportConfiguration()
        configuration.initialStreamWindow = 4096
        configuration.maxFrameSize = 4096
        let harness = try Harness(configuration: configuration)
        try harness.send(try harness.hello())
        try harness.send(try harness.request(stream: 1, end: false))
        harness.tolerateClose {
            for _ in 0..<10_000 { try harness.send(Frame(type: .message, streamID: 1, payload: ByteBuffer())) }
        }
        #expect(try harness.goAway()?.message.contains("flow-control window of stream 1") == true)
        #expect(!harness.channel.isActive)
    }

    @Test("STATUS, CANCEL and HALF_CLOSE on stream 0 are violations")
    func streamZero() throws {
        for type in [FrameType.cancel, .halfClose] {
            let harness = try Harness()
            try harness.send(try harness.hello())
            harness.tolerateClose { try harness.send(Frame(type: type, streamID: 0)) }
            #expect(try harness.goAway()?.message.contains("on stream 0") == true, "\(type)")
        }
    }

    @Test("a flood of new streams beyond the announced limit gets GOAWAY")
    func streamFlood() throws {
        var configuration = TransportConfiguration()
        configuration.maxConcurrentStreams = 10
        let harness = try Harness(configuration: configuration)
        try harness.send(try harness.hello())
        harness.tolerateClose {
            for id in UInt32(1)...1_000 { try harness.send(try harness.request(stream: id, end: false)) }
        }
        let goAway = try #require(try harness.goAway())
        #expect(StatusCode(rawValue: goAway.code) == .resourceExhausted)
        #expect(goAway.message.contains("more than 10 concurrent streams"))
        #expect(!harness.channel.isActive)
    }

    @Test("a peer that overruns its flow-control window gets GOAWAY")
    func windowOverrun() throws {
        var configuration = TransportConfiguration()
        configuration.initialStreamWindow = 4096
        configuration.connectionWindow = 1 << 20
        configuration.maxFrameSize = 8192
        let harness = try Harness(configuration: configuration)
        try harness.send(try harness.hello())
        try harness.send(try harness.request(stream: 1, end: false))
        harness.tolerateClose {
            for _ in 0..<10 {
                try harness.send(Frame(type: .message, streamID: 1, payload: ByteBuffer(repeating: 1, count: 4000)))
            }
        }
        #expect(try harness.goAway()?.message.contains("flow-control window of stream 1") == true)
        #expect(!harness.channel.isActive)
    }

    @Test("a silent peer is pinged, then declared dead and its calls fail with UNAVAILABLE")
    func deadPeer() async throws {
        var configuration = TransportConfiguration()
        configuration.keepaliveInterval = .seconds(2)
        configuration.keepaliveTimeout = .seconds(2)
        let harness = try Harness(configuration: configuration)
        try harness.send(try harness.hello())
        try harness.send(try harness.request(stream: 1, body: [], end: false))
        let call = try #require(try harness.channel.readInbound(as: IncomingCall.self))
        _ = try harness.sentFrames()

        harness.loop.advanceTime(by: .milliseconds(2_100))
        #expect(try harness.sentFrames().contains { $0.type == .ping })
        #expect(harness.channel.isActive)
        harness.loop.advanceTime(by: .milliseconds(2_100))
        #expect(!harness.channel.isActive)
        let error = await #expect(throws: RPCError.self) { _ = try await call.inbox.next() }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("keepalive") == true)
    }

    @Test("a PING is answered with a PONG carrying the same bytes")
    func pingPong() throws {
        let harness = try Harness()
        try harness.send(try harness.hello())
        _ = try harness.sentFrames()
        try harness.send(Frame(type: .ping, streamID: 0, payload: ByteBuffer(bytes: [1, 2, 3, 4, 5, 6, 7, 8])))
        let pong = try #require(try harness.sentFrames().first)
        #expect(pong.type == .pong)
        #expect(pong.payload == ByteBuffer(bytes: [1, 2, 3, 4, 5, 6, 7, 8]))
    }

    @Test("seeded random frame sequences after a valid HELLO never crash the connection")
    func randomFrames() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<300 {
            let harness = try Harness()
            try harness.send(try harness.hello())
            harness.tolerateClose {
                for _ in 0..<20 {
                    let type = FrameType.allCases[Int(rng.next() % UInt64(FrameType.allCases.count))]
                    let length = Int(rng.next() % 40)
                    let payload = ByteBuffer(bytes: (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
                    let flags = FrameFlags(rawValue: UInt8(truncatingIfNeeded: rng.next()))
                    try harness.send(Frame(type: type, flags: flags, streamID: UInt32(rng.next() % 4), payload: payload))
                }
            }
            _ = try? harness.sentFrames()
            while (try? harness.channel.readInbound(as: IncomingCall.self)) != nil {}
            _ = try? harness.channel.finish()
        }
    }
}

/// Every limit and timer of a protocol connection, with the defaults used in production.
///
/// Both sides announce their receive limits in HELLO; each side then respects the other's.
public struct TransportConfiguration: Sendable {
    /// Largest frame payload this side accepts, in bytes. A bigger frame ends the connection. Default 4 MiB.
    public var maxFrameSize: Int = 4 << 20
    /// Largest message after decompression, in bytes. Default 4 MiB.
    public var maxMessageSize: Int = 4 << 20
    /// Streams a server accepts open at once per connection; one more is a protocol violation (GOAWAY).
    /// Clients queue calls beyond the server's limit instead. Default 1,024.
    public var maxConcurrentStreams: Int = 1024
    /// Bytes of messages this side buffers per stream before the sender must wait. Default 256 KiB.
    public var initialStreamWindow: Int = 256 << 10
    /// Bytes of messages this side buffers across all streams before the sender must wait. Default 8 MiB.
    public var connectionWindow: Int = 8 << 20
    /// How long a new connection may take for TLS and HELLO before it is closed (slowloris). Default 10 s.
    public var handshakeTimeout: Duration = .seconds(10)
    /// After this long without a frame from the peer, send a PING. Default 4 s.
    public var keepaliveInterval: Duration = .seconds(4)
    /// A PING unanswered (no frame at all from the peer) for this long declares the peer dead: its calls fail
    /// with UNAVAILABLE. Dead-peer detection therefore takes at most interval + timeout (default 8 s).
    public var keepaliveTimeout: Duration = .seconds(4)
    /// Messages at least this large are zlib-compressed when the peer accepts it; nil never compresses.
    /// Default nil: on a LAN, CPU is dearer than bytes for our messages. Snapshots and logs turn it on.
    public var compressionThreshold: Int? = nil
    /// Whether this side accepts COMPRESSED frames (advertised as the "zlib" capability). Default true.
    public var acceptsCompression: Bool = true
    /// How long a graceful shutdown (GOAWAY) waits for in-flight calls before closing anyway. Default 10 s.
    public var shutdownGracePeriod: Duration = .seconds(10)

    public init() {}
}

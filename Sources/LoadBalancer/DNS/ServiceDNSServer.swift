import Foundation
public import ClusterModel
public import Logging
public import NIOCore
public import NIOPosix
import Synchronization

/// The node's DNS responder: answers the cluster's service names from a `ServiceNameResolver` and forwards other
/// names to the host's upstream resolvers, over UDP and (by default) TCP on the same port. Containers reach it
/// at the node bridge's gateway address (their resolv.conf names it).
///
/// Lifecycle: `bind` opens the sockets (port 0 picks a free one, see `localAddress`), `run` serves until
/// `shutdown()` or cancellation, then closes every socket (in-flight forwards are cancelled) and returns.
/// Nothing a peer sends can crash it: malformed queries get FORMERR, responses and runts are dropped.
public final class ServiceDNSServer: Sendable {
    public struct Configuration: Sendable {
        /// Names, domain, TTL and UDP size limits.
        public var responder = ServiceDNSResponder.Configuration()
        /// Where names outside the cluster domain go; nil: the `nameserver` lines of `resolvConfPath`, read at
        /// `bind`. The server's own address is never used (that would loop).
        public var upstreams: [SocketAddress]?
        public var resolvConfPath = "/etc/resolv.conf"
        /// How long one upstream gets to answer before the next is asked (SERVFAIL after the last).
        public var upstreamTimeout: Duration = .seconds(2)
        /// Forwarded UDP queries waiting for an upstream at once; more are answered SERVFAIL at once.
        public var maxForwardsInFlight = 256
        /// Also listen on TCP (clients retry there after a truncated UDP answer).
        public var servesTCP = true
        /// Open TCP connections at once; more are closed on arrival.
        public var maxTCPConnections = 64
        /// A TCP connection with nothing to read for this long is closed.
        public var tcpIdleTimeout: Duration = .seconds(10)

        public init() {}
    }

    /// Where it listens (UDP, and TCP on the same port).
    public let localAddress: SocketAddress
    /// The resolvers names outside the cluster domain are forwarded to, in the order they are tried.
    public let upstreams: [SocketAddress]
    private let udp: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>
    private let tcp: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>?
    private let responder: ServiceDNSResponder
    private let forwarder: DNSForwarder
    private let configuration: Configuration
    private let logger: Logger
    private let forwardsInFlight = Atomic<Int>(0)
    private let tcpConnections = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)

    private init(
        udp: NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>,
        tcp: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>?, localAddress: SocketAddress,
        upstreams: [SocketAddress], resolver: any ServiceNameResolver, configuration: Configuration, group: any EventLoopGroup,
        logger: Logger
    ) {
        self.udp = udp
        self.tcp = tcp
        self.localAddress = localAddress
        self.upstreams = upstreams
        self.responder = ServiceDNSResponder(configuration: configuration.responder, resolver: resolver)
        self.forwarder = DNSForwarder(upstreams: upstreams, timeout: configuration.upstreamTimeout, group: group)
        self.configuration = configuration
        self.logger = logger
    }

    /// Opens the UDP socket (and the TCP one on the same port) at `host`:`port`; `port` 0 picks a free port.
    public static func bind(
        host: String, port: Int = ServiceDiscovery.port, resolver: any ServiceNameResolver, configuration: Configuration = Configuration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "flotilla.dns")
    ) async throws -> ServiceDNSServer {
        // With port 0 the TCP socket takes the port the kernel gave UDP, which TCP may already use: try again.
        let attempts = port == 0 && configuration.servesTCP ? 5 : 1
        for attempt in 1...attempts {
            let udp = try await bindUDP(host: host, port: port, group: group, logger: logger)
            guard let address = udp.channel.localAddress, let boundPort = address.port else {
                udp.channel.close(promise: nil)
                throw ServiceDNSError(.bindFailed, "the DNS socket on \(host):\(port) has no local address")
            }
            var tcp: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>?
            if configuration.servesTCP {
                do {
                    tcp = try await bindTCP(host: host, port: boundPort, configuration: configuration, group: group)
                } catch {
                    try? await udp.channel.close()
                    if attempt < attempts { continue }
                    throw ServiceDNSError(.bindFailed, "could not listen for DNS over TCP on \(host):\(boundPort): \(error); another DNS server may hold the port")
                }
            }
            let upstreams = Self.upstreams(configuration: configuration, excluding: address)
            logger.debug("DNS responder listening", metadata: [
                "dns.address": "\(address)", "dns.upstreams": "\(upstreams.map { "\($0)" })", "dns.tcp": "\(tcp != nil)",
            ])
            return ServiceDNSServer(
                udp: udp, tcp: tcp, localAddress: address, upstreams: upstreams, resolver: resolver, configuration: configuration,
                group: group, logger: logger)
        }
        throw ServiceDNSError(.bindFailed, "could not listen for DNS on \(host):\(port)")
    }

    private static func bindUDP(
        host: String, port: Int, group: any EventLoopGroup, logger: Logger
    ) async throws -> NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>> {
        do {
            return try await DatagramBootstrap(group: group)
                // Queries are small: a larger datagram is cut, and then fails to parse.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 4096))
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(KeepServingOnSocketErrorHandler(logger: logger))
                        return try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw ServiceDNSError(
                .bindFailed,
                "could not listen for DNS over UDP on \(host):\(port): \(error); another DNS server may hold the port, a port below 1024 needs root, and the address must be this host's")
        }
    }

    private static func bindTCP(
        host: String, port: Int, configuration: Configuration, group: any EventLoopGroup
    ) async throws -> NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never> {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: TimeAmount(configuration.tcpIdleTimeout)))
                    try sync.addHandler(CloseWhenIdleHandler())
                    try sync.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// The configured upstreams, or those of resolv.conf, without this server itself: its own address, and, when it
    /// listens on every address, loopback on its port. Loopback resolvers are kept otherwise (systemd-resolved's
    /// 127.0.0.53, a local dnsmasq): the forwarding runs on the host, where they answer.
    static func upstreams(configuration: Configuration, excluding own: SocketAddress) -> [SocketAddress] {
        let candidates = configuration.upstreams ?? ResolvConf.nameservers(
            in: (try? String(contentsOfFile: configuration.resolvConfPath, encoding: .utf8)) ?? ""
        // A link-local address with a zone ("fe80::1%eth0") is left out: the zone would be lost on the way.
        ).filter { !$0.contains("%") }.compactMap { try? SocketAddress(ipAddress: $0, port: ServiceDiscovery.port) }
        let wildcard = own.ipAddress == "0.0.0.0" || own.ipAddress == "::"
        return candidates.filter { candidate in
            guard candidate.port == own.port else { return true }
            if candidate.ipAddress == own.ipAddress { return false }
            let loopback = candidate.ipAddress?.hasPrefix("127.") == true || candidate.ipAddress == "::1"
            return !(wildcard && loopback)
        }
    }

    // MARK: - Serving

    /// Serves until `shutdown()` or cancellation (both return normally); returns once every socket is closed.
    public func run() async throws {
        var failure: (any Error)?
        do {
            try await withTaskCancellationHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await self.serveUDP() }
                    if let tcp = self.tcp {
                        group.addTask { try await self.serveTCP(tcp) }
                    }
                }
            } onCancel: {
                shutdown()
            }
        } catch is CancellationError {
            // Stopped as asked.
        } catch {
            failure = error
            shutdown()
        }
        // A channel closed from outside finishes closing on its event loop: wait until the ports are free again.
        try? await udp.channel.closeFuture.get()
        try? await tcp?.channel.closeFuture.get()
        if let failure { throw failure }
    }

    /// Stops listening; `run` returns once in-flight work has been cancelled and every socket is closed.
    public func shutdown() {
        stopping.store(true, ordering: .relaxed)
        udp.channel.close(promise: nil)
        tcp?.channel.close(promise: nil)
    }

    private func serveUDP() async throws {
        try await withThrowingDiscardingTaskGroup { forwards in
            try await udp.executeThenClose { inbound, outbound in
                for try await datagram in inbound {
                    let client = datagram.remoteAddress
                    let bytes = Array(datagram.data.readableBytesView)
                    let reply: [UInt8]
                    switch responder.messageReceived(bytes, over: .udp) {
                    case .drop:
                        logger.trace("DNS datagram dropped", metadata: ["dns.client": "\(client)", "dns.bytes": "\(bytes.count)"])
                        continue
                    case .reply(let bytes):
                        reply = bytes
                    case .forward(let query):
                        guard forwardsInFlight.wrappingAdd(1, ordering: .relaxed).newValue <= configuration.maxForwardsInFlight else {
                            forwardsInFlight.wrappingSubtract(1, ordering: .relaxed)
                            reply = responder.serverFailure(for: query, over: .udp)
                            break
                        }
                        forwards.addTask {
                            defer { self.forwardsInFlight.wrappingSubtract(1, ordering: .relaxed) }
                            let answer = await self.forwarder.forward(bytes, over: .udp)
                            if answer == nil {
                                self.logger.debug("no upstream resolver answered", metadata: ["dns.name": "\(query.questions.first?.name.description ?? "")"])
                            }
                            let reply = answer ?? self.responder.serverFailure(for: query, over: .udp)
                            try? await outbound.write(AddressedEnvelope(remoteAddress: client, data: ByteBuffer(bytes: reply)))
                        }
                        continue
                    }
                    try? await outbound.write(AddressedEnvelope(remoteAddress: client, data: ByteBuffer(bytes: reply)))
                }
            }
            // The socket is closed: forwards still waiting for an upstream have no one to answer.
            forwards.cancelAll()
        }
        guard stopping.load(ordering: .relaxed) else {
            throw ServiceDNSError(.socketClosed, "the DNS socket on \(localAddress) closed while serving; containers on this node cannot resolve names until the responder is started again")
        }
    }

    private func serveTCP(_ tcp: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>) async throws {
        try await withThrowingDiscardingTaskGroup { connections in
            try await tcp.executeThenClose { inbound in
                for try await connection in inbound {
                    guard tcpConnections.wrappingAdd(1, ordering: .relaxed).newValue <= configuration.maxTCPConnections else {
                        tcpConnections.wrappingSubtract(1, ordering: .relaxed)
                        connection.channel.close(promise: nil)
                        continue
                    }
                    connections.addTask {
                        defer { self.tcpConnections.wrappingSubtract(1, ordering: .relaxed) }
                        await self.serve(connection)
                    }
                }
            }
            // Not listening any more: close the connections still open.
            connections.cancelAll()
        }
    }

    /// Answers a TCP connection's queries in order (RFC 7766 allows pipelining; answers keep the order here).
    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await message in inbound {
                    let bytes = Array(message.readableBytesView)
                    let reply: [UInt8]
                    switch responder.messageReceived(bytes, over: .tcp) {
                    case .drop: continue
                    case .reply(let bytes): reply = bytes
                    case .forward(let query):
                        reply = await forwarder.forward(bytes, over: .tcp) ?? responder.serverFailure(for: query, over: .tcp)
                    }
                    try await outbound.write(DNSTCPFrameDecoder.frame(reply))
                }
            }
        } catch {
            logger.trace("DNS TCP connection ended with an error", metadata: ["error": "\(error)"])
        }
    }
}

/// The DNS responder could not start, with what to do about it.
public struct ServiceDNSError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        /// The address and port could not be bound.
        public static let bindFailed = Code(name: "bind failed")
        /// The UDP socket closed without `shutdown()` (a fatal socket error).
        public static let socketClosed = Code(name: "socket closed")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Keeps a socket error from ending the responder. NIO reports a recoverable error on a UDP socket (ECONNREFUSED
/// after a reply to a closed port, ENOMEM) and keeps the socket open, but NIOAsyncChannel would end the stream of
/// datagrams with it; a fatal error closes the socket, which ends the stream anyway.
final class KeepServingOnSocketErrorHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("DNS socket error", metadata: ["error": "\(error)"])
    }
}

import NIOCore
import NIOPosix

/// Sends a client's query for a name outside the cluster domain to the upstream resolvers, one after the other,
/// each for at most `timeout`, and gives back the first answer (with the client's ID).
///
/// Each attempt goes out from a fresh socket (a new random source port) with a random ID, and only a response
/// from that upstream carrying that ID is taken, which makes forged answers hard to slip in. A UDP query goes
/// upstream over UDP (the client's EDNS size travels with it, so the upstream sets TC itself when needed), a TCP
/// query over TCP.
struct DNSForwarder: Sendable {
    let upstreams: [SocketAddress]
    let timeout: Duration
    let group: any EventLoopGroup

    /// The answer, or nil when no upstream gave one in time (or the task was cancelled).
    func forward(_ query: [UInt8], over transport: ServiceDNSResponder.Transport) async -> [UInt8]? {
        guard query.count >= DNSMessage.headerSize else { return nil }
        for upstream in upstreams {
            if Task.isCancelled { return nil }
            let id = UInt16.random(in: .min ... .max)
            var outgoing = query
            outgoing[0] = UInt8(id >> 8)
            outgoing[1] = UInt8(id & 0xFF)
            let exchange: @Sendable () async throws -> [UInt8]? = switch transport {
            case .udp: { [self, outgoing] in try await udpExchange(outgoing, with: upstream, id: id) }
            case .tcp: { [self, outgoing] in try await tcpExchange(outgoing, with: upstream, id: id) }
            }
            if var answer = await Self.within(timeout, exchange) {
                answer[0] = query[0]
                answer[1] = query[1]
                return answer
            }
        }
        return nil
    }

    private static func isAnswer(_ bytes: [UInt8], to id: UInt16) -> Bool {
        guard let header = DNSMessage.peekHeader(bytes) else { return false }
        return header.isResponse && header.id == id
    }

    private func udpExchange(_ query: [UInt8], with upstream: SocketAddress, id: UInt16) async throws -> [UInt8]? {
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .bind(host: upstream.protocol == .inet6 ? "::" : "0.0.0.0", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(AddressedEnvelope(remoteAddress: upstream, data: ByteBuffer(bytes: query)))
            for try await envelope in inbound where envelope.remoteAddress == upstream {
                let bytes = Array(envelope.data.readableBytesView)
                if Self.isAnswer(bytes, to: id) { return bytes }
            }
            return nil
        }
    }

    private func tcpExchange(_ query: [UInt8], with upstream: SocketAddress, id: UInt16) async throws -> [UInt8]? {
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(timeout))
            .connect(to: upstream) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(DNSTCPFrameDecoder.frame(query))
            for try await message in inbound {
                let bytes = Array(message.readableBytesView)
                if Self.isAnswer(bytes, to: id) { return bytes }
            }
            return nil
        }
    }

    /// `body`'s result, or nil when it fails or `timeout` passes first (it is then cancelled).
    static func within<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T?) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { try? await body() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}

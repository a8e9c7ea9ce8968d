import ClusterModel
import Logging
import NIOSSL
import Raft
import RaftRuntime
import Synchronization
import Transport
import Wire

/// Carries Raft messages to the other controllers: one queue and one stream per peer, reconnecting with
/// backoff. `send` never blocks; a full queue drops messages, which Raft repairs (retries, heartbeats).
final class RaftPeers: RaftTransport {
    private struct Peer {
        let continuation: AsyncStream<RaftMessage>.Continuation
        var stream: AsyncStream<RaftMessage>?
    }

    private let selfID: NodeID
    private let tls: CurrentTLS
    private let logger: Logger
    /// Who is where, from the replicated controller table.
    private let addresses: @Sendable () -> [NodeID: String]
    private let peers = Mutex<[NodeID: Peer]>([:])
    /// Addresses peers announced when they opened a stream to us. A new member learns the leader's address
    /// this way before its copy of the address book has any entries.
    private let announced = Mutex<[NodeID: String]>([:])
    /// Raft streams each peer has open to us. A peer's connection counts as lost only when its last one ends
    /// (a reconnecting peer may open the new stream before the old one's end is noticed).
    private let inboundStreams = Mutex<[NodeID: Int]>([:])
    /// This controller's own address, announced to every peer it streams to.
    private let advertise = Mutex<String>("")
    static let queueLimit = 4_096

    init(selfID: NodeID, tls: NIOSSLContext, logger: Logger, addresses: @escaping @Sendable () -> [NodeID: String]) {
        self.selfID = selfID
        self.tls = CurrentTLS(tls)
        self.logger = logger
        self.addresses = addresses
    }

    /// New connections use `context` (this controller's certificate was renewed).
    func replaceTLS(_ context: NIOSSLContext) { tls.replace(context) }

    func setAdvertiseAddress(_ address: String) { advertise.withLock { $0 = address } }

    /// A peer told us where it listens.
    func learn(_ id: NodeID, address: String) {
        guard HostPort.parse(address) != nil else { return }
        announced.withLock { $0[id] = address }
    }

    /// What a peer announced on its latest stream (fresh, from a live connection with a verified
    /// certificate), else the replicated address book.
    private func address(of peer: NodeID) -> String? {
        announced.withLock { $0[peer] } ?? addresses()[peer]
    }

    func inboundStreamOpened(from peer: NodeID) {
        inboundStreams.withLock { $0[peer, default: 0] += 1 }
    }

    /// Returns true when that was the peer's last open stream.
    func inboundStreamClosed(from peer: NodeID) -> Bool {
        inboundStreams.withLock { streams in
            let remaining = max(0, (streams[peer] ?? 1) - 1)
            streams[peer] = remaining == 0 ? nil : remaining
            return remaining == 0
        }
    }

    /// Addresses peers announced that differ from the address book: the leader writes them back.
    var announcedAddresses: [NodeID: String] { announced.withLock { $0 } }

    static let advertiseMetadataKey = "flotilla-advertise"

    func send(_ messages: [RaftMessage]) {
        peers.withLock { peers in
            for message in messages where message.to != selfID {
                if peers[message.to] == nil {
                    let (stream, continuation) = AsyncStream.makeStream(
                        of: RaftMessage.self, bufferingPolicy: .bufferingNewest(Self.queueLimit))
                    peers[message.to] = Peer(continuation: continuation, stream: stream)
                }
                peers[message.to]!.continuation.yield(message)
            }
        }
    }

    /// Runs one sender per peer that has messages, until cancelled.
    func run() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                // Start a sender for every peer whose queue has not been claimed yet.
                let fresh: [(NodeID, AsyncStream<RaftMessage>)] = peers.withLock { peers in
                    var fresh: [(NodeID, AsyncStream<RaftMessage>)] = []
                    for (id, peer) in peers where peer.stream != nil {
                        fresh.append((id, peer.stream!))
                        peers[id]!.stream = nil
                    }
                    return fresh
                }
                for (id, stream) in fresh {
                    group.addTask { await self.sendLoop(to: id, stream) }
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            peers.withLock { peers in for peer in peers.values { peer.continuation.finish() } }
        }
    }

    private func sendLoop(to peer: NodeID, _ stream: AsyncStream<RaftMessage>) async {
        var iterator = stream.makeAsyncIterator()
        var backoff = Duration.milliseconds(50)
        var finished = false
        while !Task.isCancelled && !finished {
            guard let address = address(of: peer), let (host, port) = HostPort.parse(address) else {
                // Not in the address book (yet): drop what is queued; Raft will resend.
                if await iterator.next() == nil { return }
                continue
            }
            do {
                let client = try await RPCClient.connect(
                    host: host, port: port, tls: tls.current, expectedServerRoles: [.controller], connectTimeout: .seconds(2),
                    logger: logger)
                backoff = .milliseconds(50)
                do {
                    let options = CallOptions(metadata: [Self.advertiseMetadataKey: advertise.withLock { $0 }])
                    try await client.bidirectional(Methods.raftStream, options: options) { writer, _ in
                        while true {
                            guard let message = await iterator.next() else {
                                finished = true
                                break
                            }
                            try await writer.write(RaftRecords.record(message))
                        }
                        writer.finish()
                    }
                } catch {
                    logger.debug("Raft stream to peer ended", metadata: ["peer": "\(peer)", "error": "\(error)"])
                }
                await client.close()
            } catch {
                logger.debug("cannot reach peer", metadata: ["peer": "\(peer)", "address": "\(address)", "error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(1))
            }
        }
    }
}

import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// A listening address for one service. With several threads it binds one socket per thread with SO_REUSEPORT,
/// so the kernel spreads new connections over them and no accept is handed between threads. HTTP services
/// listen on SwiftNIO event loops; TCP services on relay loops (see `RelayLoop`).
public final class ProxyListener: Sendable {
    public let service: ServiceProxy
    private let channels: [any Channel]
    private let relays: [(loop: RelayLoop, listener: SendableRelayListener)]

    /// The port actually bound (useful with port 0).
    public let port: Int

    private init(service: ServiceProxy, channels: [any Channel], relays: [(loop: RelayLoop, listener: SendableRelayListener)], port: Int) {
        self.service = service
        self.channels = channels
        self.relays = relays
        self.port = port
    }

    /// Starts accepting on `host:port` for `service`, on every thread of the service's group.
    public static func bind(host: String, port: Int, service: ServiceProxy) async throws -> ProxyListener {
        do {
            if service.relayLoops.isEmpty {
                return try await bindChannels(host: host, port: port, service: service)
            }
            return try await bindRelays(host: host, port: port, service: service)
        } catch {
            throw ProxyError.cannotListen("\(host):\(port)", service: service.name, underlying: error)
        }
    }

    private static func bindChannels(host: String, port: Int, service: ServiceProxy) async throws -> ProxyListener {
        let loops = service.eventLoops
        var channels: [any Channel] = []
        var boundPort = port
        do {
            for loop in loops {
                let channel = try await ServerBootstrap(group: loop)
                    .serverChannelOption(.backlog, value: 1024)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .serverChannelOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: loops.count > 1 ? 1 : 0)
                    .childChannelOption(.allowRemoteHalfClosure, value: true)
                    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try Self.accept(channel, service: service) }
                    }
                    .bind(host: host, port: boundPort)
                    .get()
                channels.append(channel)
                boundPort = channel.localAddress?.port ?? boundPort
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return ProxyListener(service: service, channels: channels, relays: [], port: boundPort)
    }

    private static func bindRelays(host: String, port: Int, service: ServiceProxy) async throws -> ProxyListener {
        let loops = service.relayLoops
        var relays: [(loop: RelayLoop, listener: SendableRelayListener)] = []
        var boundPort = port
        do {
            for loop in loops {
                let address = try SocketAddress.makeAddressResolvingHost(host, port: boundPort)
                let listener = try await loop.submit {
                    SendableRelayListener(try RelayListener.start(on: loop, address: address, sharePort: loops.count > 1, service: service))
                }.get()
                relays.append((loop, listener))
                boundPort = listener.listener.port
            }
        } catch {
            for relay in relays { try? await relay.loop.submit { relay.listener.listener.close() }.get() }
            throw error
        }
        return ProxyListener(service: service, channels: [], relays: relays, port: boundPort)
    }

    /// Stops accepting; connections already accepted carry on.
    public func close() async {
        for channel in channels { try? await channel.close() }
        for relay in relays { try? await relay.loop.submit { relay.listener.listener.close() }.get() }
    }

    /// Sets up an accepted HTTP connection (runs on the connection's loop).
    private static func accept(_ channel: any Channel, service: ServiceProxy) throws {
        guard let local = service.local(on: channel.eventLoop), !local.retired else {
            channel.close(promise: nil)
            return
        }
        try channel.pipeline.syncOperations.addHandler(HTTPFrontendHandler(service: local))
    }
}

/// A relay listener handed between its loop and the task that owns it; only touched on its loop.
struct SendableRelayListener: @unchecked Sendable {
    let listener: RelayListener
    init(_ listener: RelayListener) { self.listener = listener }
}

public enum ProxyError: Error, CustomStringConvertible, Sendable {
    case cannotListen(String, service: String, underlying: any Error)

    public var description: String {
        switch self {
        case .cannotListen(let address, let service, let underlying):
            "cannot listen on \(address) for \(service): \(underlying) (is the port in use, or the address not on this host?)"
        }
    }
}

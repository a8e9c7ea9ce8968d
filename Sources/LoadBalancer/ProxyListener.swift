public import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// A listening address for one service. With several event loops it binds one socket per loop with
/// SO_REUSEPORT, so the kernel spreads new connections over the loops and no accept is handed between threads.
public final class ProxyListener: Sendable {
    public let service: ServiceProxy
    private let channels: [any Channel]

    /// The port actually bound (useful with port 0).
    public var port: Int { channels.first?.localAddress?.port ?? 0 }

    private init(service: ServiceProxy, channels: [any Channel]) {
        self.service = service
        self.channels = channels
    }

    /// Starts accepting on `host:port` for `service`, on every loop of `group`.
    public static func bind(host: String, port: Int, service: ServiceProxy, group: any EventLoopGroup) async throws -> ProxyListener {
        let loops = Array(group.makeIterator())
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
            throw ProxyError.cannotListen("\(host):\(port)", service: service.name, underlying: error)
        }
        return ProxyListener(service: service, channels: channels)
    }

    /// Stops accepting; connections already accepted carry on.
    public func close() async {
        for channel in channels { try? await channel.close() }
    }

    /// Sets up an accepted connection for the service's current mode (runs on the connection's loop).
    private static func accept(_ channel: any Channel, service: ServiceProxy) throws {
        guard let local = service.local(on: channel.eventLoop), !local.retired else {
            channel.close(promise: nil)
            return
        }
        let settings = local.settings
        switch settings.mode {
        case .tcp:
            let clientSide = SpliceHandler()
            try channel.pipeline.syncOperations.addHandler(clientSide)
            TCPForwarder(service: local, client: channel, clientSide: clientSide).start()
        case .http:
            try channel.pipeline.syncOperations.addHandler(HTTPFrontendHandler(service: local))
        }
    }
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

import Balancing
import LoadBalancer
import NIOCore
import NIOPosix
import TestSupport

/// Starts `count` test backends and a standalone proxy in front of them (plus `extra` backends), runs `body`,
/// and stops everything, also when `body` throws.
enum ProxyFixture {
    static func run<Server>(
        backends count: Int, extra: [Backend] = [], settings: ProxySettings,
        start: (String, any EventLoopGroup) async throws -> Server, port: (Server) -> Int, stop: (Server) async -> Void,
        _ body: (StandaloneProxy, [Server]) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var servers: [Server] = []
        var backends: [Backend] = []
        for index in 0..<count {
            let server = try await start("b\(index)", group)
            servers.append(server)
            backends.append(Backend(id: "b\(index)", host: "127.0.0.1", port: port(server)))
        }
        let proxy = try await StandaloneProxy.start(StandaloneProxyConfig(listen: "127.0.0.1:0", backends: backends + extra, settings: settings))
        var failure: (any Error)?
        do { try await body(proxy, servers) } catch { failure = error }
        await proxy.stop()
        for server in servers { await stop(server) }
        try? await group.shutdownGracefully()
        if let failure { throw failure }
    }
}

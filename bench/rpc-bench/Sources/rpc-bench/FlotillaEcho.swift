// Flotilla's side: its own protocol over mTLS, with the production TLS contexts, the production
// TransportConfiguration defaults, and DiagnosticsService's Echo handlers.
import ClusterModel
import PKI
import Transport
import Wire

enum FlotillaSide {
    /// Runs a Flotilla RPC server on 127.0.0.1 (free port), calls `ready` with the port, and serves until
    /// `stop` returns.
    static func serve(
        credentials: Credentials, ready: @Sendable (Int) -> Void, until stop: @Sendable () async -> Void
    ) async throws {
        var router = RPCRouter()
        DiagnosticsService.register(into: &router)
        let server = try await RPCServer.bind(
            host: "127.0.0.1", port: 0, tls: try TLSContexts.server(credentials: credentials), router: router)
        guard let port = server.localAddress.port else { throw BenchError("Flotilla server has no port") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            ready(port)
            await stop()
            server.beginGracefulShutdown()
            try await group.waitForAll()
        }
    }

    /// Connects one client (one connection) and runs `body` with it.
    static func withClient<R: Sendable>(
        port: Int, credentials: Credentials, _ body: (FlotillaEchoTarget) async throws -> R
    ) async throws -> R {
        let client = try await RPCClient.connect(
            host: "127.0.0.1", port: port, tls: try TLSContexts.client(credentials: credentials),
            expectedServerRoles: [.controller])
        do {
            let result = try await body(FlotillaEchoTarget(client: client))
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}

struct FlotillaEchoTarget: EchoTarget {
    let client: RPCClient
    var name: String { "Flotilla" }

    func unary(_ request: Flotilla_V1_EchoRequest) async throws -> Int {
        try await client.unary(Methods.echo, request).payload.count
    }

    func expand(_ request: Flotilla_V1_EchoRequest) async throws -> (messages: Int, bytes: Int) {
        try await client.serverStreaming(Methods.echoExpand, request) { responses in
            var messages = 0
            var bytes = 0
            for try await response in responses {
                messages += 1
                bytes += response.payload.count
            }
            return (messages, bytes)
        }
    }
}

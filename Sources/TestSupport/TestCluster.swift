public import ClusterModel
public import Foundation
public import NIOSSL
public import PKI
public import Transport

/// A throwaway cluster CA and credentials for every role, for tests that speak mTLS on loopback.
public struct TestPKI: Sendable {
    public let authority: CertificateAuthority
    public let controller: Credentials
    public let agent: Credentials
    public let admin: Credentials

    public init(clusterID: String = "test-cluster", now: Date = Date()) throws {
        authority = try CertificateAuthority.create(clusterID: clusterID, now: now)
        controller = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: NodeID("controller-1"), role: .controller),
            now: now, validity: .seconds(3600))
        agent = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: NodeID("agent-1"), role: .agent),
            now: now, validity: .seconds(3600))
        admin = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: NodeID("admin"), role: .admin),
            now: now, validity: .seconds(3600))
    }

    /// Credentials for any identity, optionally already expired or not yet valid.
    public func credentials(for identity: PeerIdentity, now: Date = Date(), validity: Duration = .seconds(3600)) throws -> Credentials {
        try Credentials.issue(by: authority, identity: identity, now: now, validity: validity)
    }
}

/// Starts an RPC server on 127.0.0.1 with a free port, runs `body`, then shuts the server down.
public func withTestServer<T: Sendable>(
    credentials: Credentials,
    configuration: TransportConfiguration = .init(),
    router: RPCRouter = { var router = RPCRouter(); DiagnosticsService.register(into: &router); return router }(),
    _ body: @Sendable (RPCServer) async throws -> T
) async throws -> T {
    let server = try await RPCServer.bind(
        host: "127.0.0.1", port: 0, tls: try TLSContexts.server(credentials: credentials), router: router,
        configuration: configuration)
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await server.run()
            return nil
        }
        defer { server.beginGracefulShutdown() }
        let result = try await body(server)
        server.beginGracefulShutdown()
        _ = try await group.next()
        group.cancelAll()
        return result
    }
}

/// Connects a client with `credentials` to `server`.
public func connectTestClient(
    to server: RPCServer, credentials: Credentials, configuration: TransportConfiguration = .init(),
    expectedServerRoles: Set<NodeRole> = [.controller]
) async throws -> RPCClient {
    try await RPCClient.connect(
        host: "127.0.0.1", port: server.localAddress.port!, tls: try TLSContexts.client(credentials: credentials),
        expectedServerRoles: expectedServerRoles, configuration: configuration)
}

/// Polls `condition` until it holds or `timeout` passes (tests never sleep a fixed time to wait for state).
public func eventually(
    timeout: Duration = .seconds(10), interval: Duration = .milliseconds(20),
    _ condition: @Sendable () async throws -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}

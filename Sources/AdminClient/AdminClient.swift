public import ClusterModel
public import PKI
import Transport
public import Wire

/// The admin API as typed async calls: what the `flotilla` CLI and tests use to drive a cluster.
public final class AdminClient: Sendable {
    let client: RPCClient
    /// The controller this client is connected to.
    public var controller: PeerIdentity { client.peer }

    init(client: RPCClient) {
        self.client = client
    }

    /// Connects to the first controller in `addresses` that answers. Errors name every address tried.
    public static func connect(
        to addresses: [String], credentials: Credentials, timeout: Duration = .seconds(5)
    ) async throws -> AdminClient {
        let tls = try TLSContexts.client(credentials: credentials)
        var failures: [String] = []
        for address in addresses {
            guard let (host, port) = HostPort.parse(address) else {
                failures.append("\(address): not host:port")
                continue
            }
            do {
                let client = try await RPCClient.connect(
                    host: host, port: port, tls: tls, expectedServerRoles: [.controller], connectTimeout: timeout)
                return AdminClient(client: client)
            } catch {
                failures.append((error as? RPCError)?.message ?? "\(address): \(error)")
            }
        }
        throw RPCError(.unavailable, "could not reach a controller: \(failures.joined(separator: "; "))")
    }

    public func close() async {
        await client.close()
    }

    /// The controller's id, version and uptime.
    public func status(timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_StatusResponse {
        try await client.unary(Methods.adminStatus, Flotilla_V1_StatusRequest(), options: CallOptions(timeout: timeout))
    }
}


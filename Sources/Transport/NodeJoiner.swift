public import ClusterModel
import Crypto
public import Logging
public import PKI
import Wire
import X509

/// The joining side of `NodeMembership/Join`: generates the node's key (it never leaves the node), proves
/// the server is the cluster the token pins, trades the token and a CSR for a certificate, and returns the
/// node's credentials. Follows NOT_LEADER to the leader.
public enum NodeJoiner {
    /// What a node says about itself when it joins.
    public struct Request: Sendable {
        public var role: NodeRole
        public var name: String
        public var labels: [String: String]
        /// Agents: the IP other nodes reach it on. Controllers: host:port they serve on.
        public var advertiseAddress: String
        public var version: String

        public init(role: NodeRole, name: String = "", labels: [String: String] = [:], advertiseAddress: String = "", version: String) {
            self.role = role
            self.name = name
            self.labels = labels
            self.advertiseAddress = advertiseAddress
            self.version = version
        }
    }

    /// Joins through any of `controllers` (host:port). Throws `RPCError` with the server's reason when it
    /// refuses (wrong, expired, revoked or used-up token), PERMISSION_DENIED when the server is not the cluster
    /// the token belongs to, UNAVAILABLE when no controller could be reached.
    public static func join(
        controllers: [String], token: JoinToken, request: Request, logger: Logger = Logger(label: "flotilla.join")
    ) async throws -> Credentials {
        guard token.role == request.role else {
            throw RPCError(.invalidArgument, "this token admits \(token.role.rawValue)s; it cannot join a \(request.role.rawValue)")
        }
        let key = P256.Signing.PrivateKey()
        var message = Flotilla_V1_NodeJoinRequest()
        message.token = token.text
        message.role = request.role.rawValue
        message.csrDer = .init(try Joining.signingRequest(for: key))
        message.name = request.name
        message.labels = Flotilla_V1_Label.list(request.labels)
        message.advertiseAddress = request.advertiseAddress
        message.version = request.version

        let tls = try TLSContexts.joiner()
        var targets = controllers
        var lastError: any Error = RPCError(.unavailable, "no controller address given")
        var hops = 0
        while let target = targets.first, hops < 2 * controllers.count + 4 {
            targets.removeFirst()
            hops += 1
            guard let (host, port) = HostPort.parse(target) else {
                lastError = RPCError(.invalidArgument, "controller address '\(target)' is not host:port")
                continue
            }
            do {
                let client = try await RPCClient.connect(
                    host: host, port: port, tls: tls, connectTimeout: .seconds(3), pinnedCA: token.caPin, logger: logger)
                defer { Task { await client.close() } }
                let response = try await client.unary(Methods.nodeJoin, message, options: CallOptions(timeout: .seconds(10)))
                let ca = try Certificate(derEncoded: Array(response.caCertificateDer))
                guard try CertificateAuthority.pin(of: ca) == token.caPinHex else {
                    throw RPCError(.permissionDenied, "\(target) answered with a CA that is not the one the token pins; this is not the cluster your token belongs to")
                }
                return try Credentials(
                    caCertificate: ca, certificate: try Certificate(derEncoded: Array(response.certificateDer)), privateKey: key)
            } catch let error as RPCError where error.code == .notLeader {
                lastError = error
                if let leader = error.leaderAddress, !targets.contains(leader) { targets.insert(leader, at: 0) }
                if error.leaderAddress == nil {
                    // An election is under way: ask the same controller again shortly.
                    targets.append(target)
                    try await Task.sleep(for: .milliseconds(300))
                }
            } catch let error as RPCError where error.code == .unavailable {
                lastError = error  // try the next controller
            }
        }
        throw lastError
    }
}

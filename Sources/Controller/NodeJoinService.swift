import ClusterModel
import ClusterStore
import Crypto
import Foundation
import Logging
import PKI
import RaftRuntime
import Synchronization
import Transport
import Wire
import X509

/// Which CA this controller signs with: the replicated one (any leader has it once it has caught up), else
/// the founder's local `ca.pem` until the founder has replicated it.
struct ClusterAuthority: Sendable {
    let store: StoreApplication
    let localCAPath: String

    func current() throws -> CertificateAuthority {
        if let record = store.read({ $0.ca }) {
            return try CertificateAuthority(
                certificate: try Certificate(derEncoded: record.certificateDER),
                privateKey: try P256.Signing.PrivateKey(derRepresentation: record.privateKeyDER))
        }
        guard FileManager.default.fileExists(atPath: localCAPath) else {
            throw RPCError(.unavailable, "this controller does not have the cluster CA yet (it is still catching up); retry shortly")
        }
        return try CertificateAuthority.load(from: localCAPath)
    }

    /// The replicated form of the local CA, for the founder to propose once.
    func localRecord() throws -> ClusterCARecord? {
        guard FileManager.default.fileExists(atPath: localCAPath) else { return nil }
        let authority = try CertificateAuthority.load(from: localCAPath)
        return ClusterCARecord(
            certificateDER: try DERCoding.serialize(authority.certificate), privateKeyDER: Array(authority.privateKey.derRepresentation))
    }
}

/// Counts failed joins per source address and refuses an address that failed too often lately, so a token
/// cannot be guessed online (128-bit secrets make that hopeless anyway; this also keeps the log quiet).
final class JoinRateLimiter: Sendable {
    let maxFailures: Int
    let window: Duration
    private let failures = Mutex<[String: [ContinuousClock.Instant]]>([:])

    init(maxFailures: Int = 10, window: Duration = .seconds(60)) {
        self.maxFailures = maxFailures
        self.window = window
    }

    /// Throws RESOURCE_EXHAUSTED while `address` is over the limit.
    func check(_ address: String, now: ContinuousClock.Instant = .now) throws {
        let wait: Duration? = failures.withLock { table in
            let recent = (table[address] ?? []).filter { now - $0 < window }
            table[address] = recent.isEmpty ? nil : recent
            guard recent.count >= maxFailures, let oldest = recent.first else { return nil }
            return window - (now - oldest)
        }
        if let wait {
            throw RPCError(
                .resourceExhausted,
                "too many failed joins from \(address) in the last \(window.components.seconds) s; wait \(max(1, wait.components.seconds)) s and check the token")
        }
    }

    func recordFailure(_ address: String, now: ContinuousClock.Instant = .now) {
        failures.withLock { $0[address, default: []].append(now) }
    }
}

/// Serves `NodeMembership/Join`: a token and a CSR in, a node certificate out.
struct NodeJoinService: Sendable {
    let raft: ControllerRaft
    let authority: ClusterAuthority
    let limiter: JoinRateLimiter
    let agentCertificateLifetime: Duration
    let controllerCertificateLifetime: Duration
    let logger: Logger

    func register(into router: inout RPCRouter) {
        router.register(Methods.renewCertificate) { request, context in
            try await renew(request, caller: context.peer)
        }
        router.register(Methods.nodeJoin) { request, context in
            let source = context.remoteAddress ?? "unknown"
            try limiter.check(source)
            do {
                return try await join(request, source: source)
            } catch let error as RPCError where error.code != .notLeader && error.code != .unavailable {
                limiter.recordFailure(source)
                logger.warning("join refused", metadata: ["source": "\(source)", "error": "\(error.message)"])
                throw error
            }
        }
    }

    /// A new certificate for an agent's own identity (revoked callers never get here: the router refuses them).
    func renew(_ request: Flotilla_V1_RenewRequest, caller: PeerIdentity) async throws -> Flotilla_V1_RenewResponse {
        let status = await raft.driver.status
        guard status.role == .leader else { throw raft.translate(RaftDriverError.notLeader(leader: status.leader)) }
        try await raft.linearizable()
        guard let node = raft.store.read({ $0.node(caller.nodeID) }) else {
            throw RPCError(.permissionDenied, "node \(caller.nodeID) is not in this cluster (it was removed); join it again with a new token")
        }
        let publicKey: Certificate.PublicKey
        do {
            publicKey = try Joining.verifiedPublicKey(ofSigningRequest: Array(request.csrDer))
        } catch let error as PKIError {
            throw RPCError(.invalidArgument, error.message)
        }
        let ca = try authority.current()
        let certificate = try ca.issue(
            identity: caller, publicKey: publicKey, dnsNames: [], ipAddresses: [node.address], now: Date(),
            validity: agentCertificateLifetime)
        logger.info("certificate renewed", metadata: ["node.id": "\(caller.nodeID)", "not_after": "\(certificate.notValidAfter)"])
        var response = Flotilla_V1_RenewResponse()
        response.certificateDer = .init(try DERCoding.serialize(certificate))
        response.caCertificateDer = .init(try DERCoding.serialize(ca.certificate))
        return response
    }

    func join(_ request: Flotilla_V1_NodeJoinRequest, source: String) async throws -> Flotilla_V1_NodeJoinResponse {
        let token: JoinToken
        do {
            token = try JoinToken(parsing: request.token)
        } catch let error as PKIError {
            throw RPCError(.invalidArgument, error.message)
        }
        guard let role = NodeRole(rawValue: request.role), role == .agent || role == .controller else {
            throw RPCError(.invalidArgument, "a node joins as agent or controller, not '\(request.role)'")
        }
        let status = await raft.driver.status
        guard status.role == .leader else { throw raft.translate(RaftDriverError.notLeader(leader: status.leader)) }
        let ca = try authority.current()
        guard token.caPinHex == ca.pin else {
            throw RPCError(.permissionDenied, "\(token) belongs to another cluster (its CA pin is not this cluster's); get a token from this cluster's admin")
        }
        guard let record = raft.store.read({ $0.token(token.id) }) else {
            throw RPCError(.unauthenticated, "\(token) is unknown to this cluster (never created, or from before a restore); ask an admin for a new one (flotilla token create)")
        }
        guard token.secretMatches(record.secretSHA256) else {
            throw RPCError(.unauthenticated, "\(token) has the wrong secret; copy the whole token again")
        }
        guard token.role == role, record.role == role else {
            throw RPCError(.permissionDenied, "\(token) admits \(record.role.rawValue)s; this node asked to join as \(role.rawValue)")
        }
        let nowMs = UInt64(Date().timeIntervalSince1970 * 1000)
        if let refusal = record.refusal(atMs: nowMs) { throw RPCError(.unauthenticated, refusal) }
        let publicKey: Certificate.PublicKey
        do {
            publicKey = try Joining.verifiedPublicKey(ofSigningRequest: Array(request.csrDer))
        } catch let error as PKIError {
            throw RPCError(.invalidArgument, error.message)
        }

        var generator = SystemRandomNumberGenerator()
        let id = NodeID.random(using: &generator)
        var node: NodeRecord?
        var ipAddresses: [String] = []
        var dnsNames: [String] = []
        switch role {
        case .agent:
            let address = request.advertiseAddress.isEmpty ? source : request.advertiseAddress
            var labels: [String: String] = [:]
            for label in request.labels { labels[label.key] = label.value }
            let candidate = NodeRecord(
                id: id, name: request.name.isEmpty ? id.rawValue : request.name, labels: labels, address: address,
                joinedAtMs: nowMs, agentVersion: String(request.version.prefix(64)))
            do {
                try candidate.validate()
            } catch {
                throw RPCError(.invalidArgument, error.message)
            }
            node = candidate
            ipAddresses = [address]
        default:
            let (dns, ips) = ControllerDataDirectory.subjectAlternativeNames([request.advertiseAddress])
            dnsNames = dns
            ipAddresses = ips
        }
        let result = try await raft.propose(ClusterCommands.nodeJoin(tokenID: token.id, nowMs: nowMs, nodeID: id, role: role, node: node))
        switch result {
        case .ok: break
        case .invalid(let why): throw RPCError(.unauthenticated, why)
        case .notFound, .casFailed: throw RPCError(.unauthenticated, "\(token) was not accepted; ask an admin for a new one")
        }
        let certificate = try ca.issue(
            identity: PeerIdentity(nodeID: id, role: role), publicKey: publicKey, dnsNames: dnsNames, ipAddresses: ipAddresses,
            now: Date(), validity: role == .agent ? agentCertificateLifetime : controllerCertificateLifetime)
        logger.info("node joined", metadata: ["node.id": "\(id)", "role": "\(role.rawValue)", "token": "\(token.id)", "source": "\(source)"])
        var response = Flotilla_V1_NodeJoinResponse()
        response.nodeID = id.rawValue
        response.certificateDer = .init(try DERCoding.serialize(certificate))
        response.caCertificateDer = .init(try DERCoding.serialize(ca.certificate))
        return response
    }
}

import ClusterModel
import Crypto
import Foundation
public import Logging
public import PKI
import Synchronization
import Transport
import Wire
import X509

/// The agent's credentials now: read by every new connection, replaced when the certificate is renewed.
public final class AgentIdentity: Sendable {
    private let credentials: Mutex<Credentials>
    private let renewals = Atomic<Int>(0)

    public init(_ credentials: Credentials) {
        self.credentials = Mutex(credentials)
    }

    public var current: Credentials { credentials.withLock { $0 } }
    /// How many times the certificate was renewed since the agent started.
    public var renewalCount: Int { renewals.load(ordering: .relaxed) }

    func replace(_ renewed: Credentials) {
        credentials.withLock { $0 = renewed }
        renewals.add(1, ordering: .relaxed)
    }
}

/// Renews the agent's certificate at a random point in 50–80 % of its life: a new key made here, a CSR, and
/// `NodeMembership/Renew` on the leader. The new credentials go to disk first, then to new connections; open
/// connections (the session) keep going on the old ones.
public struct CertificateRenewer: Sendable {
    let identity: AgentIdentity
    let directory: AgentDataDirectory?
    let controllers: @Sendable () -> [String]
    let logger: Logger

    public init(identity: AgentIdentity, directory: AgentDataDirectory?, controllers: @escaping @Sendable () -> [String], logger: Logger) {
        self.identity = identity
        self.directory = directory
        self.controllers = controllers
        self.logger = logger
    }

    public func run() async {
        var due = CertificateRenewal.renewalDate(for: identity.current.certificate)
        var retry = Duration.seconds(1)
        while !Task.isCancelled {
            await CertificateRenewal.sleep(until: due)
            guard !Task.isCancelled else { return }
            do {
                let renewed = try await renew()
                try directory?.saveCredentials(renewed)
                identity.replace(renewed)
                due = CertificateRenewal.renewalDate(for: renewed.certificate)
                retry = .seconds(1)
                logger.info("certificate renewed", metadata: ["not_after": "\(renewed.certificate.notValidAfter)"])
            } catch {
                logger.warning("certificate renewal failed; retrying", metadata: ["error": "\(error)"])
                due = Date().addingTimeInterval(Double(retry.components.seconds))
                retry = min(retry * 2, .seconds(30))
            }
        }
    }

    func renew() async throws -> Credentials {
        let current = identity.current
        let key = P256.Signing.PrivateKey()
        var request = Flotilla_V1_RenewRequest()
        request.csrDer = .init(try Joining.signingRequest(for: key))
        let tls = try TLSContexts.client(credentials: current)
        var targets = controllers()
        var lastError: any Error = RPCError(.unavailable, "no controller to renew with")
        var hops = 0
        while let target = targets.first, hops < 8 {
            targets.removeFirst()
            hops += 1
            guard let (host, port) = HostPort.parse(target) else { continue }
            do {
                let client = try await RPCClient.connect(host: host, port: port, tls: tls, connectTimeout: .seconds(2), logger: logger)
                defer { Task { await client.close() } }
                let response = try await client.unary(Methods.renewCertificate, request, options: CallOptions(timeout: .seconds(10)))
                let renewed = try Credentials(
                    caCertificate: try Certificate(derEncoded: Array(response.caCertificateDer)),
                    certificate: try Certificate(derEncoded: Array(response.certificateDer)), privateKey: key)
                guard renewed.identity == current.identity, renewed.caCertificate == current.caCertificate else {
                    throw RPCError(.internalError, "the renewed certificate is not for this node or this cluster's CA")
                }
                return renewed
            } catch let error as RPCError where error.code == .notLeader {
                lastError = error
                if let leader = error.leaderAddress { targets.insert(leader, at: 0) }
            } catch {
                lastError = error
            }
        }
        throw lastError
    }
}

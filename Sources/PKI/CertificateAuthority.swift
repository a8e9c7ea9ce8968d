public import ClusterModel
public import Crypto
public import Foundation
public import X509
internal import SwiftASN1

/// The cluster's certificate authority: an ECDSA P-256 key and a self-signed certificate
/// (`O=<cluster id>, CN=flotilla-ca`, CA:true with path length 0, so it can sign leaves but no intermediates).
///
/// Every controller, agent and admin certificate in a cluster is issued by this one CA, and every TLS
/// connection trusts exactly this CA. Its SHA-256 ``pin`` goes into join tokens so that a joining node can
/// check that it is talking to the right cluster before it trusts anything the cluster sends.
///
/// Pure: no I/O, no clock. Time comes in as `now`; keys and serial numbers come from the system CSPRNG.
public struct CertificateAuthority: Sendable {
    /// The self-signed CA certificate; the trust root for the whole cluster.
    public let certificate: Certificate
    /// The CA's signing key. Whoever holds it can mint any identity in the cluster: keep it on controllers only.
    public let privateKey: P256.Signing.PrivateKey
    /// The cluster this CA serves, read from the certificate's O attribute.
    public let clusterID: String
    /// SHA-256 of the certificate's DER encoding, lowercase hex (64 characters). See ``pin(of:)``.
    public let pin: String

    /// How far before `now` a new certificate's validity starts, so that a peer whose clock is a little
    /// behind ours does not reject a certificate we have just issued.
    public static let clockSkewAllowance: Duration = .seconds(5 * 60)

    /// The CA's default lifetime: ten years. Rotating the CA means re-issuing every certificate in the
    /// cluster, so it is long on purpose; leaf certificates are the short-lived ones.
    public static let defaultValidity: Duration = .seconds(10 * 365 * 86_400)

    /// The CA's common name; the cluster is told apart by O, not CN.
    static let commonName = "flotilla-ca"

    // The key identifier leaves put in their AuthorityKeyIdentifier; computed once.
    private let keyIdentifier: ArraySlice<UInt8>

    /// Wraps an existing CA certificate and its key (for instance, loaded from disk).
    ///
    /// Checks that the key belongs to the certificate, that the certificate is a CA, and that it names a
    /// cluster (O); throws ``PKIError`` otherwise.
    public init(certificate: Certificate, privateKey: P256.Signing.PrivateKey) throws {
        guard certificate.publicKey == Certificate.PublicKey(privateKey.publicKey) else {
            throw PKIError(
                code: .invalidKey,
                message: "the CA private key does not belong to the CA certificate '\(certificate.subject)'"
            )
        }
        let constraints = try Self.x509 { try certificate.extensions.basicConstraints }
        guard case .isCertificateAuthority = constraints else {
            throw PKIError(
                code: .invalidCertificate,
                message: "certificate '\(certificate.subject)' is not a certificate authority (no BasicConstraints CA:true)"
            )
        }
        self.certificate = certificate
        self.privateKey = privateKey
        self.clusterID = try SubjectIdentity.single(.organization, in: certificate.subject)
        self.pin = try Self.pin(of: certificate)
        self.keyIdentifier =
            try Self.x509 { try certificate.extensions.subjectKeyIdentifier?.keyIdentifier }
            ?? SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier
    }

    /// Creates a new CA for cluster `clusterID` with a fresh P-256 key.
    ///
    /// - Parameters:
    ///   - clusterID: Written into the CA's and every leaf's O attribute; must not be empty.
    ///   - now: The current time; the certificate is valid from `now` minus ``clockSkewAllowance``.
    ///   - validity: How long after `now` the CA stays valid. Default ten years.
    public static func create(
        clusterID: String,
        now: Date,
        validity: Duration = defaultValidity
    ) throws -> CertificateAuthority {
        guard !clusterID.isEmpty else {
            throw PKIError(code: .invalidRequest, message: "cannot create a CA: the cluster id is empty")
        }
        try requirePositive(validity, for: "the CA")
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let certificate = try x509 {
            let name = try DistinguishedName {
                OrganizationName(clusterID)
                CommonName(commonName)
            }
            return try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: publicKey,
                notValidBefore: now - clockSkewAllowance.timeInterval,
                notValidAfter: now + validity.timeInterval,
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: publicKey)
                },
                issuerPrivateKey: Certificate.PrivateKey(key)
            )
        }
        return try CertificateAuthority(certificate: certificate, privateKey: key)
    }

    /// Issues a leaf certificate binding `identity` to `publicKey`.
    ///
    /// The certificate is named `O=<cluster id>, OU=<role>, CN=<node id>` (Docker Swarm's convention; read it
    /// back with ``identity(of:)``) and carries BasicConstraints CA:false (critical), KeyUsage digitalSignature
    /// (critical), ExtendedKeyUsage serverAuth + clientAuth (every node is both a TLS client and a server),
    /// Subject and Authority Key Identifiers, and SubjectAlternativeNames for `dnsNames` and `ipAddresses`
    /// (omitted when both are empty). It is valid from `now` minus ``clockSkewAllowance`` until `now + validity`,
    /// cut short at the CA's own expiry: a leaf can never outlive the CA that vouches for it.
    ///
    /// - Parameters:
    ///   - identity: Who the certificate is for; the node id must not be empty.
    ///   - publicKey: The holder's public key; the holder keeps the private key.
    ///   - dnsNames: Host names the holder serves under, for clients that check them.
    ///   - ipAddresses: IPv4 (`"10.0.0.5"`) or IPv6 (`"fd00::5"`) addresses in text form.
    ///   - now: The current time.
    ///   - validity: How long the certificate lasts; must be positive.
    public func issue(
        identity: PeerIdentity,
        publicKey: Certificate.PublicKey,
        dnsNames: [String],
        ipAddresses: [String],
        now: Date,
        validity: Duration
    ) throws -> Certificate {
        guard !identity.nodeID.rawValue.isEmpty else {
            throw PKIError(code: .invalidRequest, message: "cannot issue a certificate for \(identity.role.rawValue): the node id is empty")
        }
        guard NodeRole.certificateRoles.contains(identity.role) else {
            throw PKIError(code: .invalidRequest, message: "cannot issue a certificate for the \(identity.role.rawValue) role: it is for callers without a certificate")
        }
        try Self.requirePositive(validity, for: "a certificate for \(identity)")
        let names = try dnsNames.map(GeneralName.dnsName) + ipAddresses.map { text in
            guard let bytes = IPAddress.bytes(text) else {
                throw PKIError(
                    code: .invalidRequest,
                    message: "cannot issue a certificate for \(identity): '\(text)' is not an IPv4 or IPv6 address"
                )
            }
            return GeneralName.ipAddress(ASN1OctetString(contentBytes: bytes[...]))
        }
        let notValidAfter = min(now + validity.timeInterval, certificate.notValidAfter)
        return try Self.x509 {
            try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: publicKey,
                notValidBefore: now - Self.clockSkewAllowance.timeInterval,
                notValidAfter: notValidAfter,
                issuer: certificate.subject,
                subject: SubjectIdentity.distinguishedName(clusterID: clusterID, peer: identity),
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectKeyIdentifier(hash: publicKey)
                    AuthorityKeyIdentifier(keyIdentifier: keyIdentifier)
                    if !names.isEmpty {
                        SubjectAlternativeNames(names)
                    }
                },
                issuerPrivateKey: Certificate.PrivateKey(privateKey)
            )
        }
    }

    /// The CA certificate in DER, for the TLS layer's trust roots.
    public var certificateDER: [UInt8] {
        get throws { try DERCoding.serialize(certificate) }
    }

    /// The pin of a CA certificate: SHA-256 of its DER encoding, lowercase hex.
    ///
    /// A join token carries the CA's pin; a joining node computes this over the CA certificate the cluster
    /// presents and refuses to continue when they differ.
    public static func pin(of caCertificate: Certificate) throws -> String {
        let digest = SHA256.hash(data: try DERCoding.serialize(caCertificate))
        return digest.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 0x10 ? "0" + hex : hex
        }.joined()
    }

    // MARK: - Helpers

    private static func requirePositive(_ validity: Duration, for what: String) throws {
        guard validity > .zero else {
            throw PKIError(code: .invalidRequest, message: "cannot issue \(what): validity \(validity) is not positive")
        }
    }

    /// Runs X509 code, wrapping its errors (which are not PKIErrors) so callers see one error type.
    static func x509<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as PKIError {
            throw error
        } catch {
            throw PKIError(code: .encoding, message: "X.509 encoding failed: \(error)")
        }
    }
}

extension Duration {
    /// The duration in (fractional) seconds, for `Date` arithmetic.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// DER serialization, which X509 leaves to SwiftASN1.
public enum DERCoding {
    public static func serialize(_ certificate: Certificate) throws -> [UInt8] {
        try CertificateAuthority.x509 {
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            return serializer.serializedBytes
        }
    }
}

public import ClusterModel
public import Crypto
public import Foundation
public import X509

/// Everything a process needs to speak mutual TLS in the cluster: the cluster CA certificate (whom to trust),
/// its own certificate (who it is), and the private key for that certificate.
///
/// Invariants, checked by every initializer: the key belongs to the certificate, the certificate was signed by
/// the CA, and the certificate names a Flotilla identity in the CA's cluster. So ``identity`` never fails, and
/// mixing up files is caught when they are loaded rather than at the first handshake.
public struct Credentials: Sendable {
    /// The cluster CA's certificate: the only trust root for peers.
    public let caCertificate: Certificate
    /// This process's certificate, issued by ``caCertificate``.
    public let certificate: Certificate
    /// The private key for ``certificate``.
    public let privateKey: P256.Signing.PrivateKey
    /// Who ``certificate`` says this process is.
    public let identity: PeerIdentity
    /// The cluster ``certificate`` belongs to (its O attribute).
    public let clusterID: String

    /// Bundles a CA certificate, an own certificate and its key, checking that they belong together.
    /// Throws ``PKIError`` naming what does not fit.
    public init(caCertificate: Certificate, certificate: Certificate, privateKey: P256.Signing.PrivateKey) throws {
        guard certificate.publicKey == Certificate.PublicKey(privateKey.publicKey) else {
            throw PKIError(
                code: .invalidKey,
                message: "the private key does not belong to the certificate '\(certificate.subject)'"
            )
        }
        guard certificate.issuer == caCertificate.subject,
            caCertificate.publicKey.isValidSignature(certificate.signature, for: certificate)
        else {
            throw PKIError(
                code: .invalidCertificate,
                message: "the certificate '\(certificate.subject)' was not issued by the CA '\(caCertificate.subject)'"
            )
        }
        let subject = try SubjectIdentity(certificate.subject)
        let caClusterID = try SubjectIdentity.single(.organization, in: caCertificate.subject)
        guard subject.clusterID == caClusterID else {
            throw PKIError(
                code: .invalidCertificate,
                message: "the certificate is for cluster '\(subject.clusterID)' but the CA is for cluster '\(caClusterID)'"
            )
        }
        self.caCertificate = caCertificate
        self.certificate = certificate
        self.privateKey = privateKey
        self.identity = subject.peer
        self.clusterID = subject.clusterID
    }

    /// Generates a fresh P-256 key and has `authority` issue a certificate for it.
    ///
    /// Used by `--init` for the first controller and the admin, and by tests. Agents joining later generate
    /// their key locally and only send the public key.
    public static func issue(
        by authority: CertificateAuthority,
        identity: PeerIdentity,
        dnsNames: [String] = ["localhost"],
        ipAddresses: [String] = ["127.0.0.1", "::1"],
        now: Date,
        validity: Duration
    ) throws -> Credentials {
        let key = P256.Signing.PrivateKey()
        let certificate = try authority.issue(
            identity: identity,
            publicKey: Certificate.PublicKey(key.publicKey),
            dnsNames: dnsNames,
            ipAddresses: ipAddresses,
            now: now,
            validity: validity
        )
        return try Credentials(caCertificate: authority.certificate, certificate: certificate, privateKey: key)
    }

    // MARK: - DER, for the TLS layer

    /// The CA certificate in DER (for trust roots).
    public var caCertificateDER: [UInt8] {
        get throws { try DERCoding.serialize(caCertificate) }
    }

    /// The own certificate in DER (for the certificate chain).
    public var certificateDER: [UInt8] {
        get throws { try DERCoding.serialize(certificate) }
    }

    /// The private key as PKCS#8 DER.
    public var privateKeyDER: [UInt8] {
        Array(privateKey.derRepresentation)
    }

    /// The private key in the form X509 signs with.
    public var certificatePrivateKey: Certificate.PrivateKey {
        Certificate.PrivateKey(privateKey)
    }

    // MARK: - PEM

    private static let certificateNames = ["the cluster CA certificate", "this node's certificate"]

    /// The credentials as PEM text: a CERTIFICATE block for the CA, a CERTIFICATE block for this process,
    /// then a PRIVATE KEY block (PKCS#8), in that order. Readable by `openssl` and by ``init(pemBundle:)``.
    public func pemBundle() throws -> String {
        try PEMBundle.text(certificates: [caCertificate, certificate], privateKey: privateKey)
    }

    /// Reads credentials from the text ``pemBundle()`` writes. Throws ``PKIError`` naming the block that
    /// is missing or garbled, or what does not fit together.
    public init(pemBundle: String) throws {
        try self.init(pemBundle: pemBundle, source: "credentials")
    }

    private init(pemBundle: String, source: String) throws {
        let bundle = try PEMBundle(pemBundle, what: source, certificateNames: Self.certificateNames)
        do {
            try self.init(
                caCertificate: bundle.certificates[0],
                certificate: bundle.certificates[1],
                privateKey: bundle.privateKey
            )
        } catch let error as PKIError {
            throw PKIError(code: error.code, message: "\(source): \(error.message)")
        }
    }

    // MARK: - Files

    /// What to do when no credentials file is found.
    static let missingRemedy = "run `flotilla-controller --init` or pass --credentials"

    /// Writes ``pemBundle()`` to `path` atomically (temporary file in the same directory, fsync, rename)
    /// with mode 0600, replacing any file already there.
    public func write(to path: String) throws {
        try SecureFile.save(pemBundle(), to: path, what: "credentials")
    }

    /// Reads credentials written by ``write(to:)``. Errors name `path` and say what to do.
    public static func load(from path: String) throws -> Credentials {
        let text = try SecureFile.contents(of: path, what: "credentials", remedy: missingRemedy)
        return try Credentials(pemBundle: text, source: "credentials at \(path)")
    }
}

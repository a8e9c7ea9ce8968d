public import NIOSSL
public import PKI

/// TLS settings for every Flotilla connection: TLS 1.2 at least (1.3 is negotiated whenever both sides have
/// it), only forward-secret AEAD suites for 1.2, certificates chained to the cluster CA, and client
/// certificates required by servers.
public enum TLSContexts {
    /// TLS 1.2 suites allowed (1.3's suites are all strong and are not configurable). ECDSA only: every
    /// Flotilla key is P-256.
    static let tls12Ciphers: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ]

    /// A server context that requires and verifies a client certificate issued by the cluster CA.
    ///
    /// With `acceptingJoiners`, a client may also connect without a certificate (one it presents is still
    /// verified): the connection then has the `joiner` role, which may call the join method only. The chain
    /// sent includes the CA certificate, so a joiner can check it against its token's pin.
    public static func server(credentials: Credentials, acceptingJoiners: Bool = false) throws -> NIOSSLContext {
        let ca = try NIOSSLCertificate(bytes: credentials.caCertificateDER, format: .der)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(bytes: credentials.certificateDER, format: .der)), .certificate(ca)],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: credentials.privateKeyDER, format: .der)))
        configuration.trustRoots = .certificates([ca])
        // `.noHostnameVerification` makes the server demand a client certificate; `.optionalVerification`
        // verifies one if presented. Identity comes from the certificate's subject, not from a hostname.
        configuration.certificateVerification = acceptingJoiners ? .optionalVerification : .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuiteValues = tls12Ciphers
        return try NIOSSLContext(configuration: configuration)
    }

    /// A client context for a node that has no certificate yet: it presents none, and the server's chain is
    /// checked against the join token's CA pin (see `RPCClient.connect(pinnedCA:)`), not against a trust store.
    public static func joiner() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuiteValues = tls12Ciphers
        return try NIOSSLContext(configuration: configuration)
    }

    /// A client context that trusts only the cluster CA and presents `credentials` (when given).
    ///
    /// Hostnames are not verified: peers are addressed by whatever IP or name the operator typed, and what
    /// matters is that the certificate chains to the cluster CA and carries the expected role, which the
    /// connection checks after the handshake.
    public static func client(credentials: Credentials) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([try NIOSSLCertificate(bytes: credentials.caCertificateDER, format: .der)])
        configuration.certificateChain = [.certificate(try NIOSSLCertificate(bytes: credentials.certificateDER, format: .der))]
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: credentials.privateKeyDER, format: .der))
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuiteValues = tls12Ciphers
        return try NIOSSLContext(configuration: configuration)
    }
}

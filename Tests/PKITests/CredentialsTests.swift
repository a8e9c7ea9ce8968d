import ClusterModel
import Foundation
import PKI
import Testing
import X509

@Suite("Credentials")
struct CredentialsTests {
    let ca: CertificateAuthority
    let credentials: Credentials

    init() throws {
        ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        credentials = try Credentials.issue(by: ca, identity: agentIdentity, now: fixedNow, validity: oneDay)
    }

    // MARK: - PEM

    @Test("the PEM bundle holds the CA certificate, the own certificate and a PKCS#8 key, in that order")
    func pemBundleLayout() throws {
        let text = try credentials.pemBundle()
        let markers = text.split(separator: "\n").filter { $0.hasPrefix("-----BEGIN ") }
        #expect(markers == ["-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----"])
        let certificates = try text.ranges(of: "-----BEGIN CERTIFICATE-----").map { start in
            let end = try #require(text[start.lowerBound...].range(of: "-----END CERTIFICATE-----"))
            return try Certificate(pemEncoded: String(text[start.lowerBound..<end.upperBound]))
        }
        #expect(certificates == [ca.certificate, credentials.certificate])
    }

    @Test("the PEM bundle round-trips")
    func pemRoundTrip() throws {
        let loaded = try Credentials(pemBundle: credentials.pemBundle())
        #expect(loaded.caCertificate == credentials.caCertificate)
        #expect(loaded.certificate == credentials.certificate)
        #expect(loaded.privateKeyDER == credentials.privateKeyDER)
        #expect(loaded.identity == agentIdentity)
        #expect(loaded.clusterID == "cluster-a")
    }

    @Test("DER accessors give the encodings the TLS layer loads")
    func derAccessors() throws {
        #expect(try Certificate(derEncoded: credentials.caCertificateDER) == ca.certificate)
        #expect(try Certificate(derEncoded: credentials.certificateDER) == credentials.certificate)
        #expect(try credentials.caCertificateDER == ca.certificateDER)
        // PKCS#8 is what "-----BEGIN PRIVATE KEY-----" wraps.
        let pem = try credentials.pemBundle()
        let keyBase64 = pem.components(separatedBy: "-----BEGIN PRIVATE KEY-----\n")[1]
            .components(separatedBy: "-----END PRIVATE KEY-----")[0]
            .replacingOccurrences(of: "\n", with: "")
        #expect(Data(base64Encoded: keyBase64).map(Array.init) == credentials.privateKeyDER)
    }

    @Test("a PEM bundle without a private key is refused, naming the missing block")
    func pemMissingKey() throws {
        let text = try credentials.pemBundle()
        let withoutKey = String(text[..<text.range(of: "-----BEGIN PRIVATE KEY-----")!.lowerBound])
        let error = try #require(throws: PKIError.self) { try Credentials(pemBundle: withoutKey) }
        #expect(error.code == .invalidPEM)
        #expect(error.message.contains("no PRIVATE KEY block"))
    }

    @Test("a PEM bundle with one certificate is refused, saying the node's certificate is missing")
    func pemMissingCertificate() throws {
        let text = try ca.certificate.serializeAsPEM().pemString + "\n" + credentials.pemBundle()
            .components(separatedBy: "-----END CERTIFICATE-----\n").last!
        let error = try #require(throws: PKIError.self) { try Credentials(pemBundle: text) }
        #expect(error.code == .invalidPEM)
        #expect(error.message.contains("found 1 CERTIFICATE block(s); this node's certificate is missing"))
    }

    @Test("a PEM bundle with a garbled certificate is refused, naming which certificate")
    func pemGarbledCertificate() throws {
        let blocks = try credentials.pemBundle().components(separatedBy: "-----END CERTIFICATE-----\n")
        let text = blocks[0] + "-----END CERTIFICATE-----\n"
            + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" + blocks[2]
        let error = try #require(throws: PKIError.self) { try Credentials(pemBundle: text) }
        #expect(error.code == .invalidPEM)
        #expect(error.message.contains("this node's certificate is not a valid X.509 certificate"))
    }

    @Test("text with no PEM in it is refused, saying what was expected")
    func pemNoBlocks() throws {
        let error = try #require(throws: PKIError.self) { try Credentials(pemBundle: "hello") }
        #expect(error.message.contains("no PEM blocks found; expected 2 CERTIFICATE block(s)"))
    }

    // MARK: - Invariants

    @Test("credentials refuse a private key that does not belong to the certificate")
    func wrongKey() throws {
        let other = try Credentials.issue(by: ca, identity: agentIdentity, now: fixedNow, validity: oneDay)
        let error = try #require(throws: PKIError.self) {
            try Credentials(caCertificate: ca.certificate, certificate: credentials.certificate, privateKey: other.privateKey)
        }
        #expect(error.code == .invalidKey)
    }

    @Test("credentials refuse a certificate that another CA issued")
    func foreignCertificate() throws {
        let otherCA = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let error = try #require(throws: PKIError.self) {
            try Credentials(
                caCertificate: otherCA.certificate, certificate: credentials.certificate, privateKey: credentials.privateKey)
        }
        #expect(error.code == .invalidCertificate)
        #expect(error.message.contains("was not issued by the CA"))
    }

    // MARK: - Files

    @Test("credentials written to a file load back, and the file has mode 0600")
    func fileRoundTrip() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/agent.pem"
            // An existing, world-readable file is replaced by a private one.
            try "old".write(toFile: path, atomically: false, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)

            try credentials.write(to: path)
            #expect(try permissions(of: path) == 0o600)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["agent.pem"])

            let loaded = try Credentials.load(from: path)
            #expect(loaded.certificate == credentials.certificate)
            #expect(loaded.caCertificate == credentials.caCertificate)
            #expect(loaded.privateKeyDER == credentials.privateKeyDER)
            #expect(loaded.identity == agentIdentity)
        }
    }

    @Test("loading from a missing file names the path and says what to do")
    func missingFile() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/nothing-here.pem"
            let error = try #require(throws: PKIError.self) { try Credentials.load(from: path) }
            #expect(error.code == .fileNotFound)
            #expect(error.message == "no credentials at \(path); run `flotilla-controller --init` or pass --credentials")
        }
    }

    @Test("loading from a garbage file names the path and what is wrong")
    func garbageFile() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/garbage.pem"
            try "this is not a credentials file\n".write(toFile: path, atomically: false, encoding: .utf8)
            let error = try #require(throws: PKIError.self) { try Credentials.load(from: path) }
            #expect(error.code == .invalidPEM)
            #expect(error.message.hasPrefix("credentials at \(path): no PEM blocks found"))
        }
    }

    @Test("writing into a directory that does not exist fails, naming the path")
    func writeToMissingDirectory() throws {
        let path = "/nonexistent-\(UUID().uuidString)/agent.pem"
        let error = try #require(throws: PKIError.self) { try credentials.write(to: path) }
        #expect(error.code == .fileAccess)
        #expect(error.message.hasPrefix("cannot write credentials to \(path)"))
    }
}

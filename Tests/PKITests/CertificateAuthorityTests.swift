import ClusterModel
import Foundation
import PKI
import Testing
// The SPI is how X509 spells "validate at a time other than now"; the plain time initializer is deprecated.
@_spi(FixedExpiryValidationTime) import X509

@Suite("Certificate authority")
struct CertificateAuthorityTests {
    @Test("a CA issues a certificate whose identity reads back")
    func identityRoundTrip() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        for role in NodeRole.certificateRoles {
            let peer = PeerIdentity(nodeID: NodeID("node-\(role.rawValue)"), role: role)
            let credentials = try Credentials.issue(by: ca, identity: peer, now: fixedNow, validity: oneDay)
            #expect(try identity(of: credentials.certificate) == peer)
            #expect(try clusterID(of: credentials.certificate) == "cluster-a")
            #expect(credentials.identity == peer)
            #expect(credentials.clusterID == "cluster-a")
        }
        // The joiner role is what a caller without a certificate has; no certificate ever carries it.
        let joiner = PeerIdentity(nodeID: NodeID("j"), role: .joiner)
        #expect(throws: PKIError.self) { try Credentials.issue(by: ca, identity: joiner, now: fixedNow, validity: oneDay) }
        #expect(ca.clusterID == "cluster-a")
    }

    @Test("a CA certificate is self-signed, CA:true with path length 0")
    func caShape() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        #expect(ca.certificate.subject == ca.certificate.issuer)
        #expect(try ca.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        #expect(try ca.certificate.extensions.keyUsage == KeyUsage(keyCertSign: true, cRLSign: true))
        #expect(ca.certificate.notValidBefore == fixedNow - 300)
        #expect(ca.certificate.notValidAfter == fixedNow + 10 * 365 * 86_400)
    }

    @Test("a leaf certificate carries the subject, extensions and validity window mutual TLS needs")
    func leafShape() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let holder = try Credentials.issue(by: ca, identity: agentIdentity, now: fixedNow, validity: oneDay)
        let leaf = try ca.issue(
            identity: agentIdentity,
            publicKey: holder.certificate.publicKey,
            dnsNames: ["agent-7.local"],
            ipAddresses: ["10.1.2.3", "fd00::7"],
            now: fixedNow,
            validity: oneDay
        )
        #expect(leaf.subject.description == "CN=agent-7,OU=agent,O=cluster-a")
        #expect(leaf.issuer == ca.certificate.subject)
        #expect(leaf.notValidBefore == fixedNow - 300)
        #expect(leaf.notValidAfter == fixedNow + 86_400)

        let extensions = leaf.extensions
        #expect(try extensions.basicConstraints == .notCertificateAuthority)
        #expect(extensions[oid: .X509ExtensionID.basicConstraints]?.critical == true)
        #expect(try extensions.keyUsage == KeyUsage(digitalSignature: true))
        #expect(extensions[oid: .X509ExtensionID.keyUsage]?.critical == true)
        #expect(try extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth, .clientAuth]))
        #expect(try extensions.subjectKeyIdentifier == SubjectKeyIdentifier(hash: leaf.publicKey))
        #expect(
            try extensions.authorityKeyIdentifier?.keyIdentifier
                == ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier
        )
        let names = try #require(try extensions.subjectAlternativeNames)
        #expect(Array(names).count == 3)
        #expect(names.contains(.dnsName("agent-7.local")))
        let addresses = names.compactMap { name -> [UInt8]? in
            if case .ipAddress(let octets) = name { return Array(octets.bytes) }
            return nil
        }
        #expect(addresses == [[10, 1, 2, 3], [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]])
    }

    @Test("an issued certificate verifies against its CA")
    func verifiesAgainstOwnCA() async throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let credentials = try Credentials.issue(by: ca, identity: agentIdentity, now: fixedNow, validity: oneDay)
        let result = await validate(credentials.certificate, trusting: ca.certificate, at: fixedNow + 3_600)
        #expect(result == true)
    }

    @Test("an issued certificate does not verify against another cluster's CA")
    func doesNotVerifyAgainstOtherCA() async throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let other = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let credentials = try Credentials.issue(by: ca, identity: agentIdentity, now: fixedNow, validity: oneDay)
        let result = await validate(credentials.certificate, trusting: other.certificate, at: fixedNow + 3_600)
        #expect(result == false)
    }

    @Test("an expired certificate fails verification at the current time")
    func expiredCertificateFails() async throws {
        let twoYearsAgo = Date() - 2 * 365 * 86_400
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: twoYearsAgo)
        let credentials = try Credentials.issue(by: ca, identity: agentIdentity, now: twoYearsAgo, validity: oneDay)
        #expect(await validate(credentials.certificate, trusting: ca.certificate, at: nil) == false)
        // The same certificate was fine while it was valid, so it is the clock that rejects it.
        #expect(await validate(credentials.certificate, trusting: ca.certificate, at: twoYearsAgo + 60) == true)
    }

    @Test("a leaf certificate never outlives its CA")
    func leafClampedToCA() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow, validity: oneDay)
        let credentials = try Credentials.issue(
            by: ca, identity: agentIdentity, now: fixedNow, validity: .seconds(30 * 86_400))
        #expect(credentials.certificate.notValidAfter == ca.certificate.notValidAfter)
    }

    @Test("an IP address that does not parse is refused, naming the address")
    func badIPAddress() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let error = try #require(throws: PKIError.self) {
            try Credentials.issue(
                by: ca, identity: agentIdentity, ipAddresses: ["10.0.0.300"], now: fixedNow, validity: oneDay)
        }
        #expect(error.code == .invalidRequest)
        #expect(error.message.contains("'10.0.0.300' is not an IPv4 or IPv6 address"))
    }

    @Test("an empty cluster id, an empty node id and a non-positive validity are refused")
    func badRequests() throws {
        #expect(throws: PKIError.self) { try CertificateAuthority.create(clusterID: "", now: fixedNow) }
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        #expect(throws: PKIError.self) {
            try Credentials.issue(
                by: ca, identity: PeerIdentity(nodeID: NodeID(""), role: .agent), now: fixedNow, validity: oneDay)
        }
        #expect(throws: PKIError.self) {
            try Credentials.issue(by: ca, identity: agentIdentity, now: fixedNow, validity: .zero)
        }
    }

    @Test("the pin is the SHA-256 of the CA certificate, stable, and different between CAs")
    func pin() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let other = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        #expect(ca.pin.count == 64)
        #expect(ca.pin.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(try CertificateAuthority.pin(of: ca.certificate) == ca.pin)
        #expect(try CertificateAuthority(pemBundle: ca.pemBundle()).pin == ca.pin)
        #expect(other.pin != ca.pin)
    }

    @Test("a CA written to a file loads back, and the file has mode 0600")
    func caFileRoundTrip() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        try withTemporaryDirectory { directory in
            let path = CertificateAuthority.path(inDataDirectory: directory)
            #expect(path == directory + "/ca.pem")
            try ca.write(to: path)
            #expect(try permissions(of: path) == 0o600)
            let loaded = try CertificateAuthority.load(from: path)
            #expect(loaded.certificate == ca.certificate)
            #expect(loaded.privateKey.rawRepresentation == ca.privateKey.rawRepresentation)
            #expect(try loaded.pemBundle() == ca.pemBundle())
            #expect(loaded.pin == ca.pin)
        }
    }

    @Test("loading a CA from a missing file names the path and says how to create one")
    func caMissingFile() throws {
        let error = try #require(throws: PKIError.self) {
            try CertificateAuthority.load(from: "/nonexistent/flotilla/ca.pem")
        }
        #expect(error.code == .fileNotFound)
        #expect(error.message == "no cluster CA at /nonexistent/flotilla/ca.pem; run `flotilla-controller --init` to create the cluster")
    }

    @Test("a CA refuses a private key that is not its own")
    func caWrongKey() throws {
        let ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let other = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
        let error = try #require(throws: PKIError.self) {
            try CertificateAuthority(certificate: ca.certificate, privateKey: other.privateKey)
        }
        #expect(error.code == .invalidKey)
    }

    /// Validates `leaf` against the single root `root` by RFC 5280 rules, at `time` or, when nil, the current time.
    private func validate(_ leaf: Certificate, trusting root: Certificate, at time: Date?) async -> Bool {
        var verifier = Verifier(rootCertificates: CertificateStore([root])) {
            if let time {
                RFC5280Policy(fixedExpiryValidationTime: time)
            } else {
                RFC5280Policy()
            }
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore()) {
        case .validCertificate: return true
        case .couldNotValidate: return false
        }
    }
}

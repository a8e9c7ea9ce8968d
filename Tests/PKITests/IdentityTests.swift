import ClusterModel
import Foundation
import PKI
import Testing
import X509

@Suite("Reading identities from certificates")
struct IdentityTests {
    let ca: CertificateAuthority

    init() throws {
        ca = try CertificateAuthority.create(clusterID: "cluster-a", now: fixedNow)
    }

    @Test("a certificate with no OU is refused with a message saying the role is missing")
    func noOU() throws {
        // The CA certificate is named O=cluster-a, CN=flotilla-ca: no role.
        let error = try #require(throws: PKIError.self) { try identity(of: ca.certificate) }
        #expect(error.code == .invalidIdentity)
        #expect(
            error.message
                == "certificate subject 'CN=flotilla-ca,O=cluster-a' has no OU (the role: controller, agent, admin); "
                + "Flotilla certificates are named O=<cluster id>, OU=<role>, CN=<node id>"
        )
    }

    @Test("a certificate whose OU is not a role is refused, listing the roles")
    func unknownRole() throws {
        let certificate = try certificate(named: DistinguishedName {
            OrganizationName("cluster-a")
            OrganizationalUnitName("wizard")
            CommonName("merlin")
        })
        let error = try #require(throws: PKIError.self) { try identity(of: certificate) }
        #expect(error.code == .invalidIdentity)
        #expect(error.message.contains("has OU 'wizard', which is not a role; expected one of controller, agent, admin"))
    }

    @Test("a certificate with no CN is refused")
    func noCN() throws {
        let certificate = try certificate(named: DistinguishedName {
            OrganizationName("cluster-a")
            OrganizationalUnitName("agent")
        })
        let error = try #require(throws: PKIError.self) { try identity(of: certificate) }
        #expect(error.message.contains("has no CN (the node id)"))
    }

    @Test("a certificate with two CNs is refused rather than guessing which is the node id")
    func twoCNs() throws {
        let certificate = try certificate(named: DistinguishedName {
            OrganizationName("cluster-a")
            OrganizationalUnitName("agent")
            CommonName("agent-1")
            CommonName("controller-1")
        })
        let error = try #require(throws: PKIError.self) { try identity(of: certificate) }
        #expect(error.message.contains("has 2 CN (the node id) attributes"))
    }

    @Test("a certificate's cluster id is its O")
    func clusterIDReadsO() throws {
        #expect(try clusterID(of: ca.certificate) == "cluster-a")
        let certificate = try certificate(named: DistinguishedName { CommonName("x") })
        let error = try #require(throws: PKIError.self) { try clusterID(of: certificate) }
        #expect(error.message.contains("has no O (the cluster id)"))
    }

    /// A certificate with an arbitrary subject, signed by the CA, for shapes `issue` never produces.
    private func certificate(named subject: DistinguishedName) throws -> Certificate {
        try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: ca.certificate.publicKey,
            notValidBefore: fixedNow,
            notValidAfter: fixedNow + 60,
            issuer: ca.certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: Certificate.Extensions(),
            issuerPrivateKey: Certificate.PrivateKey(ca.privateKey)
        )
    }
}

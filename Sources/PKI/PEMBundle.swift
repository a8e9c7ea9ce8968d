internal import Crypto
internal import SwiftASN1
internal import X509

/// A PEM text holding certificates followed by one private key, parsed and checked block by block.
///
/// Shared by the credentials file (CA certificate, own certificate, key) and the CA file (CA certificate,
/// key), so both report a missing or garbled block the same way, naming which block it is.
struct PEMBundle {
    static let certificateLabel = "CERTIFICATE"
    /// PKCS#8, which is what we write.
    static let privateKeyLabel = "PRIVATE KEY"
    /// SEC1, what `openssl ecparam -genkey` writes; accepted on read so hand-made files work.
    static let ecPrivateKeyLabel = "EC PRIVATE KEY"

    var certificates: [Certificate]
    var privateKey: P256.Signing.PrivateKey

    /// Parses `text`, which must hold exactly `certificateNames.count` CERTIFICATE blocks, in that order,
    /// and one PRIVATE KEY block.
    /// - Parameters:
    ///   - what: What the text holds, for messages ("credentials", "the cluster CA file").
    ///   - certificateNames: What each certificate is, in order ("the cluster CA", "this node's certificate").
    init(_ text: String, what: String, certificateNames: [String]) throws {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw PKIError(code: .invalidPEM, message: "\(what): the PEM text is garbled: \(error)")
        }
        let expected = "expected \(certificateNames.count) CERTIFICATE block(s) (\(certificateNames.joined(separator: ", then "))) and one PRIVATE KEY block"
        guard !documents.isEmpty else {
            throw PKIError(code: .invalidPEM, message: "\(what): no PEM blocks found; \(expected)")
        }

        var certificateDocuments: [PEMDocument] = []
        var keyDocuments: [PEMDocument] = []
        for document in documents {
            switch document.discriminator {
            case Self.certificateLabel: certificateDocuments.append(document)
            case Self.privateKeyLabel, Self.ecPrivateKeyLabel: keyDocuments.append(document)
            default:
                throw PKIError(
                    code: .invalidPEM,
                    message: "\(what): unexpected '\(document.discriminator)' block; \(expected)"
                )
            }
        }
        guard certificateDocuments.count == certificateNames.count else {
            let missing = certificateNames.dropFirst(certificateDocuments.count).first.map { "; \($0) is missing" } ?? ""
            throw PKIError(
                code: .invalidPEM,
                message: "\(what): found \(certificateDocuments.count) CERTIFICATE block(s)\(missing); \(expected)"
            )
        }
        guard keyDocuments.count == 1 else {
            throw PKIError(
                code: .invalidPEM,
                message: keyDocuments.isEmpty
                    ? "\(what): no PRIVATE KEY block found; \(expected)"
                    : "\(what): found \(keyDocuments.count) private key blocks; \(expected)"
            )
        }

        self.certificates = try zip(certificateDocuments, certificateNames).map { document, name in
            do {
                return try Certificate(derEncoded: document.derBytes)
            } catch {
                throw PKIError(
                    code: .invalidPEM,
                    message: "\(what): \(name) is not a valid X.509 certificate: \(error)"
                )
            }
        }
        do {
            self.privateKey = try P256.Signing.PrivateKey(pemRepresentation: keyDocuments[0].pemString)
        } catch {
            throw PKIError(
                code: .invalidPEM,
                message: "\(what): the private key is not an ECDSA P-256 key: \(error)"
            )
        }
    }

    /// The PEM text for `certificates` then `privateKey` (PKCS#8), each block ending in a newline.
    static func text(certificates: [Certificate], privateKey: P256.Signing.PrivateKey) throws -> String {
        let certificateBlocks = try certificates.map { certificate in
            try CertificateAuthority.x509 { try certificate.serializeAsPEM().pemString }
        }
        return (certificateBlocks + [privateKey.pemRepresentation]).map { $0 + "\n" }.joined()
    }
}

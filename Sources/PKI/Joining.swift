public import Crypto
public import Foundation
public import X509
internal import SwiftASN1

/// The certificate-signing half of joining: the joiner's request, the leader's check of it, and the joiner's
/// check that it is talking to the cluster its token belongs to.
public enum Joining {
    /// A PKCS#10 request (DER) for `privateKey`'s public key, signed with it. The key never leaves the node;
    /// the subject is a placeholder (the leader names the node).
    public static func signingRequest(for privateKey: P256.Signing.PrivateKey) throws -> [UInt8] {
        try CertificateAuthority.x509 {
            let request = try CertificateSigningRequest(
                version: .v1, subject: try DistinguishedName { CommonName("flotilla-joiner") },
                privateKey: Certificate.PrivateKey(privateKey), attributes: CertificateSigningRequest.Attributes())
            var serializer = DER.Serializer()
            try serializer.serialize(request)
            return serializer.serializedBytes
        }
    }

    /// The public key of a signing request, once its self-signature checks out and the key is P-256.
    /// - Throws: ``PKIError`` (`invalidSigningRequest`) when the request does not parse, is not signed by the
    ///   key it carries (someone else's key), or is not for a P-256 key.
    public static func verifiedPublicKey(ofSigningRequest der: [UInt8]) throws -> Certificate.PublicKey {
        let request: CertificateSigningRequest
        do {
            request = try CertificateSigningRequest(derEncoded: der)
        } catch {
            throw PKIError(code: .invalidSigningRequest, message: "the certificate signing request does not parse: \(error)")
        }
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw PKIError(
                code: .invalidSigningRequest,
                message: "the certificate signing request is not signed by the key it asks a certificate for; the joiner must sign it with its own key")
        }
        guard P256.Signing.PublicKey(request.publicKey) != nil else {
            throw PKIError(code: .invalidSigningRequest, message: "the certificate signing request is not for a P-256 key; Flotilla nodes use ECDSA P-256")
        }
        return request.publicKey
    }

    /// Checks a server's certificate chain (leaf first, DER) against a join token's CA pin: some certificate in
    /// the chain must be a CA whose SHA-256 equals `pin`, it must have signed the leaf, and the leaf must be
    /// valid at `now`. Returns the pinned CA certificate.
    /// - Throws: ``PKIError`` with code `wrongCluster` ("this is not the cluster your token belongs to") when no
    ///   certificate in the chain matches the pin, `invalidCertificate` when the chain is broken.
    public static func verifyServerChain(_ chain: [[UInt8]], pin: [UInt8], now: Date = Date()) throws -> Certificate {
        guard let leafDER = chain.first else {
            throw PKIError(code: .invalidCertificate, message: "the server presented no certificate")
        }
        guard let caDER = chain.first(where: { Array(SHA256.hash(data: $0)) == pin }) else {
            throw PKIError(
                code: .wrongCluster,
                message: "this is not the cluster your token belongs to: the server's CA does not match the token's CA pin; check the address, or get a token from this cluster's admin")
        }
        let (ca, leaf) = try CertificateAuthority.x509 {
            (try Certificate(derEncoded: caDER), try Certificate(derEncoded: leafDER))
        }
        guard leaf.issuer == ca.subject, ca.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            throw PKIError(code: .invalidCertificate, message: "the server's certificate was not issued by the CA the token pins")
        }
        guard leaf.notValidBefore <= now, now <= leaf.notValidAfter else {
            throw PKIError(code: .invalidCertificate, message: "the server's certificate is not valid now (\(leaf.notValidBefore) – \(leaf.notValidAfter)); check the clocks")
        }
        return ca
    }
}

public import ClusterModel
public import X509
internal import SwiftASN1

// A Flotilla certificate names its holder the way Docker Swarm does:
//   O=<cluster id>, OU=<role>, CN=<node id>
// The TLS layer reads the peer's identity from here, so these functions are the single place that
// decides what a subject means.

/// Reads who a certificate belongs to: the node id (CN) and role (OU).
///
/// Throws ``PKIError`` with code ``PKIError/Code/invalidIdentity`` when the subject has no CN or OU,
/// repeats either, has an empty node id, or has an OU that is not a ``NodeRole``. This does not check
/// the certificate's signature or validity period; verify the chain first (TLS does) and then ask who it is.
public func identity(of certificate: Certificate) throws -> PeerIdentity {
    try SubjectIdentity(certificate.subject).peer
}

/// Reads which cluster a certificate belongs to: its subject's O (organization) attribute.
///
/// Throws ``PKIError`` with code ``PKIError/Code/invalidIdentity`` when O is missing, repeated or empty.
public func clusterID(of certificate: Certificate) throws -> String {
    try SubjectIdentity.single(.organization, in: certificate.subject)
}

/// The three subject attributes Flotilla uses, parsed and checked.
struct SubjectIdentity {
    var clusterID: String
    var peer: PeerIdentity

    init(_ subject: DistinguishedName) throws {
        let nodeID = try Self.single(.commonName, in: subject)
        let roleName = try Self.single(.organizationalUnit, in: subject)
        guard let role = NodeRole(rawValue: roleName), NodeRole.certificateRoles.contains(role) else {
            throw PKIError(
                code: .invalidIdentity,
                message: "certificate subject '\(subject)' has OU '\(roleName)', which is not a role; "
                    + "expected one of \(NodeRole.certificateRoles.map(\.rawValue).joined(separator: ", "))"
            )
        }
        self.clusterID = try Self.single(.organization, in: subject)
        self.peer = PeerIdentity(nodeID: NodeID(nodeID), role: role)
    }

    /// The subject a certificate for `peer` in cluster `clusterID` carries.
    static func distinguishedName(clusterID: String, peer: PeerIdentity) throws -> DistinguishedName {
        try DistinguishedName {
            OrganizationName(clusterID)
            OrganizationalUnitName(peer.role.rawValue)
            CommonName(peer.nodeID.rawValue)
        }
    }

    enum Field {
        case commonName, organizationalUnit, organization

        var oid: ASN1ObjectIdentifier {
            switch self {
            case .commonName: .RDNAttributeType.commonName
            case .organizationalUnit: .RDNAttributeType.organizationalUnitName
            case .organization: .RDNAttributeType.organizationName
            }
        }

        var label: String {
            switch self {
            case .commonName: "CN (the node id)"
            case .organizationalUnit: "OU (the role: \(NodeRole.certificateRoles.map(\.rawValue).joined(separator: ", ")))"
            case .organization: "O (the cluster id)"
            }
        }
    }

    /// The value of `field`, which must appear exactly once and be a non-empty string.
    /// Exactly once, because with two CNs "which one is the node id?" has no safe answer.
    static func single(_ field: Field, in subject: DistinguishedName) throws -> String {
        let values = subject.flatMap { $0 }.filter { $0.type == field.oid }.map(\.value)
        guard let value = values.first else {
            throw PKIError(
                code: .invalidIdentity,
                message: "certificate subject '\(subject)' has no \(field.label); "
                    + "Flotilla certificates are named O=<cluster id>, OU=<role>, CN=<node id>"
            )
        }
        guard values.count == 1 else {
            throw PKIError(
                code: .invalidIdentity,
                message: "certificate subject '\(subject)' has \(values.count) \(field.label) attributes; "
                    + "a Flotilla certificate has exactly one"
            )
        }
        guard let text = String(value), !text.isEmpty else {
            throw PKIError(
                code: .invalidIdentity,
                message: "certificate subject '\(subject)' has an empty or non-text \(field.label)"
            )
        }
        return text
    }
}

public import ClusterModel
internal import Messages

/// A join token as the store keeps it: its public id, role, limits, and only the SHA-256 of its secret.
public struct JoinTokenRecord: Sendable, Hashable {
    public var id: String
    /// `.agent` or `.controller`.
    public var role: NodeRole
    public var secretSHA256: [UInt8]
    public var createdAtMs: UInt64
    public var expiresAtMs: UInt64
    /// Joins it admits; 0 means no limit.
    public var maxUses: UInt32
    public var used: UInt32
    public var revoked: Bool

    public init(
        id: String, role: NodeRole, secretSHA256: [UInt8], createdAtMs: UInt64, expiresAtMs: UInt64,
        maxUses: UInt32 = 0, used: UInt32 = 0, revoked: Bool = false
    ) {
        self.id = id
        self.role = role
        self.secretSHA256 = secretSHA256
        self.createdAtMs = createdAtMs
        self.expiresAtMs = expiresAtMs
        self.maxUses = maxUses
        self.used = used
        self.revoked = revoked
    }

    /// Why the token admits no join at `nowMs`, as a sentence for the joiner; nil when it does.
    public func refusal(atMs nowMs: UInt64) -> String? {
        if revoked { return "join token \(id) was revoked; ask an admin for a new one (flotilla token create)" }
        if nowMs >= expiresAtMs {
            return "join token \(id) expired \(Self.age(nowMs - expiresAtMs)) ago; ask an admin for a new one (flotilla token create)"
        }
        if maxUses > 0 && used >= maxUses {
            return "join token \(id) has been used \(used) of \(maxUses) times; ask an admin for a new one (flotilla token create)"
        }
        return nil
    }

    static func age(_ milliseconds: UInt64) -> String {
        let seconds = milliseconds / 1000
        if seconds < 120 { return "\(seconds) s" }
        if seconds < 7200 { return "\(seconds / 60) min" }
        return "\(seconds / 3600) h"
    }

    var problem: String? {
        let bytes = Array(id.utf8)
        guard (4...32).contains(bytes.count), bytes.allSatisfy({ (0x30...0x39 ~= $0) || (0x61...0x7A ~= $0) }) else {
            return "token id \(quoted(id, limit: 40)) must be 4 to 32 lowercase letters and digits"
        }
        guard role == .agent || role == .controller else { return "token \(id): a join token is for agents or controllers, not \(role.rawValue)s" }
        guard secretSHA256.count == 32 else { return "token \(id): the secret's hash must be 32 bytes (SHA-256), not \(secretSHA256.count)" }
        guard expiresAtMs > createdAtMs else { return "token \(id) would expire before it is created" }
        return nil
    }
}

/// The cluster's certificate authority, as replicated: DER certificate and DER (PKCS#8) P-256 private key.
public struct ClusterCARecord: Sendable, Hashable {
    public var certificateDER: [UInt8]
    public var privateKeyDER: [UInt8]

    public init(certificateDER: [UInt8], privateKeyDER: [UInt8]) {
        self.certificateDER = certificateDER
        self.privateKeyDER = privateKeyDER
    }
}

// MARK: - Protobuf

extension JoinTokenRecord {
    /// nil when the role is not one this version knows.
    init?(proto: Flotilla_V1_JoinTokenRecord) {
        guard let role = NodeRole(rawValue: proto.role) else { return nil }
        self.init(
            id: proto.id, role: role, secretSHA256: [UInt8](proto.secretSha256), createdAtMs: proto.createdAtMs,
            expiresAtMs: proto.expiresAtMs, maxUses: proto.maxUses, used: proto.used, revoked: proto.revoked)
    }

    var proto: Flotilla_V1_JoinTokenRecord {
        var proto = Flotilla_V1_JoinTokenRecord()
        proto.id = id
        proto.role = role.rawValue
        proto.secretSha256 = .init(secretSHA256)
        proto.createdAtMs = createdAtMs
        proto.expiresAtMs = expiresAtMs
        proto.maxUses = maxUses
        proto.used = used
        proto.revoked = revoked
        return proto
    }
}

extension ClusterCARecord {
    init(proto: Flotilla_V1_ClusterCA) {
        self.init(certificateDER: [UInt8](proto.certificateDer), privateKeyDER: [UInt8](proto.privateKeyDer))
    }

    var proto: Flotilla_V1_ClusterCA {
        var proto = Flotilla_V1_ClusterCA()
        proto.certificateDer = .init(certificateDER)
        proto.privateKeyDer = .init(privateKeyDER)
        return proto
    }
}

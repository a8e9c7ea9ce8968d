public import ClusterModel
internal import Messages

/// A controller as the cluster knows it: how the other members reach it and whether it votes.
/// The store keeps these as the address book the Raft runtime dials.
public struct ControllerRecord: Sendable, Hashable {
    /// The controller's node id (from its certificate).
    public var id: NodeID
    /// Where other members reach it: host:port, IPv6 hosts in brackets ("[::1]:7400").
    public var address: String
    /// True for a voting member; false for a learner still catching up.
    public var isVoter: Bool

    public init(id: NodeID, address: String, isVoter: Bool) {
        self.id = id
        self.address = address
        self.isVoter = isVoter
    }

    /// The longest node id, in bytes.
    public static let maxIDBytes = 128
    /// The longest address, in bytes (a 253-byte DNS name, a colon, a port, with room to spare).
    public static let maxAddressBytes = 300

    /// Checks the record against the store's rules; `apply` uses the same checks.
    /// - Throws: ``StoreError/Code/invalidArgument`` with a message naming the controller and the rule.
    public func validate() throws(StoreError) {
        if let problem = Self.problem(id: id.rawValue) ?? addressProblem {
            throw StoreError(code: .invalidArgument, message: problem)
        }
    }

    /// The rule a controller id breaks, as a sentence; nil when it is fine.
    static func problem(id: String) -> String? {
        let bytes = id.utf8
        if bytes.isEmpty { return "a controller id may not be empty" }
        if bytes.count > maxIDBytes {
            return "controller id \(quoted(id, limit: 64)) is \(bytes.count) bytes long; the limit is \(maxIDBytes)"
        }
        if !bytes.allSatisfy(isVisibleASCII) {
            return "controller id \(quoted(id, limit: 64)) may contain only visible ASCII characters"
        }
        return nil
    }

    private var addressProblem: String? {
        let bytes = address.utf8
        if bytes.count > Self.maxAddressBytes || !bytes.allSatisfy(isVisibleASCII) || HostPort.parse(address) == nil {
            return "controller \(id)'s address \(quoted(address, limit: 64)) is not host:port (e.g. 10.0.0.5:7400 or [::1]:7400)"
        }
        return nil
    }
}

// MARK: - Protobuf

extension ControllerRecord {
    init(proto: Flotilla_V1_ControllerRecord) {
        self.init(id: NodeID(proto.id), address: proto.address, isVoter: proto.voter)
    }

    var proto: Flotilla_V1_ControllerRecord {
        var proto = Flotilla_V1_ControllerRecord()
        proto.id = id.rawValue
        proto.address = address
        proto.voter = isVoter
        return proto
    }
}

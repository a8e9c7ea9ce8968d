public import ClusterModel
internal import Messages

/// A node that runs an agent, as the cluster knows it. Controllers live in the address book instead.
public struct NodeRecord: Sendable, Hashable {
    /// Whether the leader hears from the node.
    public enum Status: String, Sendable, Hashable, CaseIterable {
        /// Joined; no session yet.
        case unknown
        /// Heartbeating.
        case ready
        /// Missed three heartbeat periods.
        case down
    }

    /// Whether the scheduler may place tasks on the node: the operator's choice.
    public enum Availability: String, Sendable, Hashable, CaseIterable {
        /// New tasks may go here.
        case active
        /// No new tasks; running ones stay.
        case pause
        /// No tasks: running ones move away.
        case drain
    }

    public var id: NodeID
    /// A human name, unique in the cluster.
    public var name: String
    public var labels: [String: String]
    /// The IP address other nodes reach the node's tasks and load balancer on.
    public var address: String
    public var status: Status
    public var availability: Availability
    public var joinedAtMs: UInt64
    public var statusChangedAtMs: UInt64
    public var agentVersion: String
    /// Its containers' subnet ("10.240.3.0/24"), given by the store when it joins; empty: none yet.
    public var subnet: String = ""

    public init(
        id: NodeID, name: String, labels: [String: String] = [:], address: String, status: Status = .unknown,
        availability: Availability = .active, joinedAtMs: UInt64, statusChangedAtMs: UInt64? = nil, agentVersion: String = ""
    ) {
        self.id = id
        self.name = name
        self.labels = labels
        self.address = address
        self.status = status
        self.availability = availability
        self.joinedAtMs = joinedAtMs
        self.statusChangedAtMs = statusChangedAtMs ?? joinedAtMs
        self.agentVersion = agentVersion
    }

    public static let maxNameLength = 63
    public static let maxLabelKeyLength = 63
    public static let maxLabelValueLength = 253
    public static let maxLabels = 64

    /// Checks the record against the store's rules; `apply` uses the same checks.
    /// - Throws: ``StoreError/Code/invalidArgument`` naming the node and the rule.
    public func validate() throws(StoreError) {
        if let problem { throw StoreError(code: .invalidArgument, message: problem) }
    }

    var problem: String? {
        if let problem = NodeRecord.idProblem(id.rawValue, kind: "node") { return problem }
        if let problem = Self.nameProblem(name) { return problem }
        if labels.count > Self.maxLabels { return "node \(name) has \(labels.count) labels; the limit is \(Self.maxLabels)" }
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            if let problem = Self.labelProblem(key: key, value: value) { return problem }
        }
        if IPAddressText.isValid(address) == false {
            return "node \(name)'s address \(quoted(address, limit: 64)) is not an IPv4 or IPv6 address"
        }
        if agentVersion.utf8.count > 64 || !agentVersion.utf8.allSatisfy(isVisibleASCII) {
            return "node \(name)'s agent version \(quoted(agentVersion, limit: 64)) is not a short version string"
        }
        return nil
    }

    /// The rule a node or controller id breaks, as a sentence; nil when it is fine.
    static func idProblem(_ id: String, kind: String) -> String? {
        let bytes = id.utf8
        if bytes.isEmpty { return "a \(kind) id may not be empty" }
        if bytes.count > ControllerRecord.maxIDBytes {
            return "\(kind) id \(quoted(id, limit: 64)) is \(bytes.count) bytes long; the limit is \(ControllerRecord.maxIDBytes)"
        }
        if !bytes.allSatisfy(isVisibleASCII) {
            return "\(kind) id \(quoted(id, limit: 64)) may contain only visible ASCII characters"
        }
        return nil
    }

    /// Names and label keys: letters, digits, '-', '_', '.', starting with a letter or digit (like a DNS label).
    private static func isNameCharacter(_ byte: UInt8) -> Bool {
        (0x30...0x39 ~= byte) || (0x41...0x5A ~= byte) || (0x61...0x7A ~= byte) || byte == 0x2D || byte == 0x5F || byte == 0x2E
    }

    public static func nameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maxNameLength, bytes.allSatisfy(isNameCharacter), isNameCharacter(bytes[0]),
              bytes[0] != 0x2D, bytes[0] != 0x2E, bytes[0] != 0x5F else {
            return "node name \(quoted(name, limit: 64)) must be 1 to \(maxNameLength) letters, digits, '-', '_' or '.', starting with a letter or digit"
        }
        return nil
    }

    public static func labelProblem(key: String, value: String) -> String? {
        let keyBytes = Array(key.utf8)
        guard !keyBytes.isEmpty, keyBytes.count <= maxLabelKeyLength, keyBytes.allSatisfy(isNameCharacter) else {
            return "label key \(quoted(key, limit: 64)) must be 1 to \(maxLabelKeyLength) letters, digits, '-', '_' or '.'"
        }
        let valueBytes = value.utf8
        guard valueBytes.count <= maxLabelValueLength, valueBytes.allSatisfy({ isVisibleASCII($0) && $0 != 0x2C && $0 != 0x3D }) else {
            return "label \(key)'s value \(quoted(value, limit: 64)) must be at most \(maxLabelValueLength) visible characters without ',' or '='"
        }
        return nil
    }
}

/// A node whose identity was revoked: its certificate is refused from then on.
public struct RevokedNode: Sendable, Hashable {
    public var id: NodeID
    public var revokedAtMs: UInt64

    public init(id: NodeID, revokedAtMs: UInt64) {
        self.id = id
        self.revokedAtMs = revokedAtMs
    }
}

/// Textual IP address checks without a socket API (the store stays pure).
enum IPAddressText {
    static func isValid(_ text: String) -> Bool {
        isIPv4(text) || isIPv6(text)
    }

    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { part in
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCII), let value = Int(part), value <= 255 else { return false }
            return part.count == 1 || part.first != "0"
        }
    }

    static func isIPv6(_ text: String) -> Bool {
        guard text.contains(":"), text.count <= 45 else { return false }
        let pieces = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard pieces.count <= 2 else { return false }
        var groups = 0
        for (position, piece) in pieces.enumerated() where !piece.isEmpty {
            var parts = piece.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if position == pieces.count - 1, let last = parts.last, last.contains(".") {
                guard isIPv4(last) else { return false }
                parts.removeLast()
                groups += 2
            }
            for part in parts {
                guard (1...4).contains(part.count), part.allSatisfy(\.isHexDigit) else { return false }
                groups += 1
            }
        }
        return pieces.count == 2 ? groups < 8 : groups == 8
    }
}

// MARK: - Protobuf

extension NodeRecord.Status {
    init(proto: Flotilla_V1_NodeStatus) {
        switch proto {
        case .ready: self = .ready
        case .down: self = .down
        default: self = .unknown
        }
    }

    var proto: Flotilla_V1_NodeStatus {
        switch self {
        case .unknown: .unknown
        case .ready: .ready
        case .down: .down
        }
    }
}

extension NodeRecord.Availability {
    init?(proto: Flotilla_V1_NodeAvailability) {
        switch proto {
        case .active: self = .active
        case .pause: self = .pause
        case .drain: self = .drain
        case .UNRECOGNIZED: return nil
        }
    }

    var proto: Flotilla_V1_NodeAvailability {
        switch self {
        case .active: .active
        case .pause: .pause
        case .drain: .drain
        }
    }
}

extension NodeRecord {
    /// nil when the proto carries a value this version does not know (an enum case from a newer Flotilla).
    init?(proto: Flotilla_V1_NodeRecord) {
        guard let availability = Availability(proto: proto.availability) else { return nil }
        if case .UNRECOGNIZED = proto.status { return nil }
        self.init(
            id: NodeID(proto.id), name: proto.name,
            labels: Dictionary(proto.labels.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last }),
            address: proto.address, status: Status(proto: proto.status), availability: availability,
            joinedAtMs: proto.joinedAtMs, statusChangedAtMs: proto.statusChangedAtMs, agentVersion: proto.agentVersion)
        subnet = proto.subnet
    }

    var proto: Flotilla_V1_NodeRecord {
        var proto = Flotilla_V1_NodeRecord()
        proto.id = id.rawValue
        proto.name = name
        proto.role = NodeRole.agent.rawValue
        proto.labels = labels.sorted { $0.key < $1.key }.map { key, value in
            var label = Flotilla_V1_Label()
            label.key = key
            label.value = value
            return label
        }
        proto.address = address
        proto.subnet = subnet
        proto.status = status.proto
        proto.availability = availability.proto
        proto.joinedAtMs = joinedAtMs
        proto.statusChangedAtMs = statusChangedAtMs
        proto.agentVersion = agentVersion
        return proto
    }
}

extension RevokedNode {
    init(proto: Flotilla_V1_RevokedNode) {
        self.init(id: NodeID(proto.id), revokedAtMs: proto.revokedAtMs)
    }

    var proto: Flotilla_V1_RevokedNode {
        var proto = Flotilla_V1_RevokedNode()
        proto.id = id.rawValue
        proto.revokedAtMs = revokedAtMs
        return proto
    }
}

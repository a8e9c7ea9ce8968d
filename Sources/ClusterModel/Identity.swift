/// A node's identity in the cluster: stable for the node's life, written into its certificate.
///
/// Controllers, agents and admins all have one. It is chosen when the node joins (or by `--init`
/// for the first controller and the admin) and never changes.
public struct NodeID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }

    public var description: String { rawValue }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// What a peer is allowed to be in the cluster. Decides which RPCs it may call.
public enum NodeRole: String, Sendable, Hashable, CaseIterable, Codable {
    /// A Raft member: keeps the replicated state; the leader among them runs the control loops.
    case controller
    /// Runs tasks and the node's load balancer; reports to the leader.
    case agent
    /// A person or script driving the cluster with the `flotilla` CLI.
    case admin
    /// A caller without a certificate yet, holding a join token: it may call the join method and nothing
    /// else. Never written into a certificate.
    case joiner

    /// The roles a certificate may carry.
    public static let certificateRoles: [NodeRole] = [.controller, .agent, .admin]
}

/// Who is on the other end of a connection, as proven by its certificate.
public struct PeerIdentity: Hashable, Sendable, CustomStringConvertible {
    public var nodeID: NodeID
    public var role: NodeRole

    public init(nodeID: NodeID, role: NodeRole) {
        self.nodeID = nodeID
        self.role = role
    }

    public var description: String { "\(role.rawValue) \(nodeID)" }
}

extension NodeID {
    /// A fresh random node id: 16 characters of lowercase base-32 (80 bits), like "k3v9q2m7x1c4b8n5".
    /// Randomness comes in from the caller so the pure core stays deterministic under test.
    public static func random(using generator: inout some RandomNumberGenerator) -> NodeID {
        let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")
        var id = ""
        for _ in 0..<16 { id.append(alphabet[Int(generator.next() % UInt64(alphabet.count))]) }
        return NodeID(id)
    }
}

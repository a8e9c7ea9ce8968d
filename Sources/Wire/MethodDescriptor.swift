public import ClusterModel
public import SwiftProtobuf

/// The shape of a call.
public enum CallKind: Sendable {
    /// One request, one response.
    case unary
    /// One request, a stream of responses.
    case serverStreaming
    /// A stream of requests and a stream of responses, in any interleaving (client streaming is the case
    /// with one response).
    case bidirectionalStreaming
}

/// A method of the protocol: its wire name, its message types, its shape, and who may call it.
///
/// Every method Flotilla serves is declared once, in `Methods`, so the roles allowed to call it live in one
/// place and the server checks them in one place (`RPCRouter`).
public struct MethodDescriptor<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>: Sendable {
    /// "<proto package>.<Service>/<Method>", e.g. "flotilla.v1.Health/Check".
    public let name: String
    public let kind: CallKind
    /// The roles whose certificates may call this method; anyone else gets PERMISSION_DENIED.
    public let allowedRoles: Set<NodeRole>

    public init(_ name: String, kind: CallKind, allowedRoles: Set<NodeRole>) {
        self.name = name
        self.kind = kind
        self.allowedRoles = allowedRoles
    }
}

/// Every method of the protocol, with the roles that may call it.
public enum Methods {
    static let everyone = Set(NodeRole.allCases)

    // MARK: - Health
    public static let healthCheck = MethodDescriptor<Flotilla_V1_HealthCheckRequest, Flotilla_V1_HealthCheckResponse>(
        "flotilla.v1.Health/Check", kind: .unary, allowedRoles: everyone)

    // MARK: - Echo (tests and benchmarks of the protocol)
    public static let echo = MethodDescriptor<Flotilla_V1_EchoRequest, Flotilla_V1_EchoResponse>(
        "flotilla.v1.Echo/Echo", kind: .unary, allowedRoles: everyone)
    public static let echoExpand = MethodDescriptor<Flotilla_V1_EchoRequest, Flotilla_V1_EchoResponse>(
        "flotilla.v1.Echo/Expand", kind: .serverStreaming, allowedRoles: everyone)
    public static let echoChat = MethodDescriptor<Flotilla_V1_EchoRequest, Flotilla_V1_EchoResponse>(
        "flotilla.v1.Echo/Chat", kind: .bidirectionalStreaming, allowedRoles: everyone)

    // MARK: - Admin
    public static let adminStatus = MethodDescriptor<Flotilla_V1_StatusRequest, Flotilla_V1_StatusResponse>(
        "flotilla.v1.Admin/Status", kind: .unary, allowedRoles: [.admin])
}

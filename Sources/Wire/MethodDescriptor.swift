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
    static let everyone = Set(NodeRole.certificateRoles)

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
    public static let varPut = MethodDescriptor<Flotilla_V1_VarPutRequest, Flotilla_V1_VarWriteResponse>(
        "flotilla.v1.Admin/VarPut", kind: .unary, allowedRoles: [.admin])
    public static let varGet = MethodDescriptor<Flotilla_V1_VarGetRequest, Flotilla_V1_VarGetResponse>(
        "flotilla.v1.Admin/VarGet", kind: .unary, allowedRoles: [.admin])
    public static let varList = MethodDescriptor<Flotilla_V1_VarListRequest, Flotilla_V1_VarListResponse>(
        "flotilla.v1.Admin/VarList", kind: .unary, allowedRoles: [.admin])
    public static let varDelete = MethodDescriptor<Flotilla_V1_VarDeleteRequest, Flotilla_V1_VarWriteResponse>(
        "flotilla.v1.Admin/VarDelete", kind: .unary, allowedRoles: [.admin])
    public static let controllerList = MethodDescriptor<Flotilla_V1_ControllerListRequest, Flotilla_V1_ControllerListResponse>(
        "flotilla.v1.Admin/ControllerList", kind: .unary, allowedRoles: [.admin])
    public static let controllerRemove = MethodDescriptor<Flotilla_V1_ControllerRemoveRequest, Flotilla_V1_ControllerRemoveResponse>(
        "flotilla.v1.Admin/ControllerRemove", kind: .unary, allowedRoles: [.admin])
    public static let transferLeadership = MethodDescriptor<Flotilla_V1_TransferLeadershipRequest, Flotilla_V1_TransferLeadershipResponse>(
        "flotilla.v1.Admin/TransferLeadership", kind: .unary, allowedRoles: [.admin])

    public static let snapshotSave = MethodDescriptor<Flotilla_V1_SnapshotSaveRequest, Flotilla_V1_SnapshotChunk>(
        "flotilla.v1.Admin/SnapshotSave", kind: .serverStreaming, allowedRoles: [.admin])
    public static let tokenCreate = MethodDescriptor<Flotilla_V1_TokenCreateRequest, Flotilla_V1_TokenCreateResponse>(
        "flotilla.v1.Admin/TokenCreate", kind: .unary, allowedRoles: [.admin])
    public static let tokenList = MethodDescriptor<Flotilla_V1_TokenListRequest, Flotilla_V1_TokenListResponse>(
        "flotilla.v1.Admin/TokenList", kind: .unary, allowedRoles: [.admin])
    public static let tokenRevoke = MethodDescriptor<Flotilla_V1_TokenRevokeRequest, Flotilla_V1_TokenRevokeResponse>(
        "flotilla.v1.Admin/TokenRevoke", kind: .unary, allowedRoles: [.admin])

    public static let nodeList = MethodDescriptor<Flotilla_V1_NodeListRequest, Flotilla_V1_NodeListResponse>(
        "flotilla.v1.Admin/NodeList", kind: .unary, allowedRoles: [.admin])
    public static let nodeUpdate = MethodDescriptor<Flotilla_V1_NodeUpdateRequest, Flotilla_V1_NodeInfo>(
        "flotilla.v1.Admin/NodeUpdate", kind: .unary, allowedRoles: [.admin])
    public static let nodeRemove = MethodDescriptor<Flotilla_V1_NodeRemoveRequest, Flotilla_V1_NodeRemoveResponse>(
        "flotilla.v1.Admin/NodeRemove", kind: .unary, allowedRoles: [.admin])

    public static let serviceCreate = MethodDescriptor<Flotilla_V1_ServiceCreateRequest, Flotilla_V1_ServiceRecord>(
        "flotilla.v1.Admin/ServiceCreate", kind: .unary, allowedRoles: [.admin])
    public static let serviceUpdate = MethodDescriptor<Flotilla_V1_ServiceUpdateRequest, Flotilla_V1_ServiceRecord>(
        "flotilla.v1.Admin/ServiceUpdate", kind: .unary, allowedRoles: [.admin])
    public static let serviceRollback = MethodDescriptor<Flotilla_V1_ServiceRef, Flotilla_V1_ServiceRecord>(
        "flotilla.v1.Admin/ServiceRollback", kind: .unary, allowedRoles: [.admin])
    public static let serviceRemove = MethodDescriptor<Flotilla_V1_ServiceRef, Flotilla_V1_ServiceRecord>(
        "flotilla.v1.Admin/ServiceRemove", kind: .unary, allowedRoles: [.admin])
    public static let serviceList = MethodDescriptor<Flotilla_V1_ServiceListRequest, Flotilla_V1_ServiceListResponse>(
        "flotilla.v1.Admin/ServiceList", kind: .unary, allowedRoles: [.admin])
    public static let serviceInspect = MethodDescriptor<Flotilla_V1_ServiceRef, Flotilla_V1_ServiceInspectResponse>(
        "flotilla.v1.Admin/ServiceInspect", kind: .unary, allowedRoles: [.admin])
    public static let imageList = MethodDescriptor<Flotilla_V1_ImageListRequest, Flotilla_V1_ImageListResponse>(
        "flotilla.v1.Admin/ImageList", kind: .unary, allowedRoles: [.admin])
    public static let balancerStats = MethodDescriptor<Flotilla_V1_BalancerStatsRequest, Flotilla_V1_BalancerStatsResponse>(
        "flotilla.v1.Admin/BalancerStats", kind: .unary, allowedRoles: [.admin])
    public static let taskLogs = MethodDescriptor<Flotilla_V1_TaskLogsRequest, Flotilla_V1_TaskLogsResponse>(
        "flotilla.v1.Admin/TaskLogs", kind: .serverStreaming, allowedRoles: [.admin])
    public static let events = MethodDescriptor<Flotilla_V1_EventsRequest, Flotilla_V1_EventsResponse>(
        "flotilla.v1.Admin/Events", kind: .serverStreaming, allowedRoles: [.admin])
    public static let serviceAutoscale = MethodDescriptor<Flotilla_V1_ServiceRef, Flotilla_V1_ServiceAutoscaleResponse>(
        "flotilla.v1.Admin/ServiceAutoscale", kind: .unary, allowedRoles: [.admin])

    // MARK: - Agents
    public static let agentSession = MethodDescriptor<Flotilla_V1_AgentHeartbeat, Flotilla_V1_SessionUpdate>(
        "flotilla.v1.NodeMembership/Session", kind: .bidirectionalStreaming, allowedRoles: [.agent])

    public static let renewCertificate = MethodDescriptor<Flotilla_V1_RenewRequest, Flotilla_V1_RenewResponse>(
        "flotilla.v1.NodeMembership/Renew", kind: .unary, allowedRoles: [.agent])
    /// Client streaming: an agent's answer to one log subscription (see `LogBroker`).
    public static let publishLogs = MethodDescriptor<Flotilla_V1_LogPublication, Flotilla_V1_LogPublicationAck>(
        "flotilla.v1.NodeMembership/PublishLogs", kind: .bidirectionalStreaming, allowedRoles: [.agent])

    // MARK: - Joining: the one method a caller without a certificate may call
    public static let nodeJoin = MethodDescriptor<Flotilla_V1_NodeJoinRequest, Flotilla_V1_NodeJoinResponse>(
        "flotilla.v1.NodeMembership/Join", kind: .unary, allowedRoles: [.joiner])

    // MARK: - Between controllers
    public static let raftStream = MethodDescriptor<Flotilla_V1_RaftMessageRecord, Flotilla_V1_RaftStreamAck>(
        "flotilla.v1.Raft/Stream", kind: .bidirectionalStreaming, allowedRoles: [.controller])
    public static let controllerJoin = MethodDescriptor<Flotilla_V1_JoinRequest, Flotilla_V1_JoinResponse>(
        "flotilla.v1.ControllerMembership/Join", kind: .unary, allowedRoles: [.controller])
}

public import Messages

/// Which events a reader of `flotilla events` wants: the filters of an `EventsRequest`, applied the same way on
/// every controller.
public struct EventFilter: Sendable, Hashable {
    /// Only events at or after this time, Unix ms (0: no bound).
    public var sinceMs: UInt64
    /// Only these types; an entry without a dot is a prefix ("task" matches "task.failed"). Empty: every type.
    public var types: [String]
    /// Only events about this service / node, by name or id; empty: any.
    public var service: String
    public var node: String

    public init(sinceMs: UInt64 = 0, types: [String] = [], service: String = "", node: String = "") {
        self.sinceMs = sinceMs
        self.types = types
        self.service = service
        self.node = node
    }

    /// The filters of `request` (its `since_id` is the reader's position, not a filter).
    public init(_ request: Flotilla_V1_EventsRequest) {
        self.init(sinceMs: request.sinceMs, types: request.types, service: request.service, node: request.node)
    }

    public func matches(_ event: Flotilla_V1_ClusterEvent) -> Bool {
        guard event.atMs >= sinceMs else { return false }
        if !types.isEmpty && !types.contains(where: { Self.type(event.type, matches: $0) }) { return false }
        if !service.isEmpty && event.serviceID != service && event.serviceName != service { return false }
        if !node.isEmpty && event.nodeID != node && event.nodeName != node { return false }
        return true
    }

    private static func type(_ type: String, matches wanted: String) -> Bool {
        wanted.contains(".") ? type == wanted : type.hasPrefix(wanted + ".")
    }
}

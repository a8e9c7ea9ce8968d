public import ClusterModel

/// What the node's DNS responder does with one message a client sent: answer it from the service names, send it
/// to the upstream resolvers, or drop it. Pure: the server shell (`ServiceDNSServer`) moves the bytes.
///
/// Names, compared without regard to ASCII case, with or without a trailing dot:
/// - `SERVICE` and `SERVICE.<domain>` for a known service: its addresses as A records (TTL `ttl`), authoritative;
///   AAAA and other types: NOERROR with no answers (the name exists, with IPv4 addresses only).
/// - any other name under the domain, or an unknown single label: NXDOMAIN (single labels have no meaning
///   upstream, and are what a client asks last after its search domain).
/// - the domain itself: NOERROR with no answers.
/// - everything else: forwarded.
/// A response to UDP that would exceed 512 bytes (or the EDNS(0) size the client offers, up to
/// `maxUDPPayloadSize`) is sent with TC set and no answers, so the client asks again over TCP.
public struct ServiceDNSResponder: Sendable {
    public struct Configuration: Sendable {
        /// The cluster domain (`ServiceDiscovery.domain`).
        public var domain: DNSName
        /// Seconds clients may cache an answer (`ServiceDiscovery.ttlSeconds`).
        public var ttl: UInt32
        /// The largest UDP response this server sends to an EDNS(0) client (1232 avoids IP fragmentation, as
        /// DNS Flag Day 2020 recommends).
        public var maxUDPPayloadSize: UInt16

        public init(domain: DNSName = DNSName(ServiceDiscovery.domain)!, ttl: UInt32 = ServiceDiscovery.ttlSeconds, maxUDPPayloadSize: UInt16 = 1232) {
            self.domain = domain
            self.ttl = ttl
            self.maxUDPPayloadSize = maxUDPPayloadSize
        }
    }

    public enum Transport: Sendable {
        case udp
        case tcp
    }

    public enum Action: Equatable, Sendable {
        /// Send these bytes back to the client.
        case reply([UInt8])
        /// The name is outside the cluster domain: send the client's bytes upstream and relay the answer (or
        /// `serverFailure(for:over:)` when none comes).
        case forward(DNSMessage)
        /// Send nothing (a response, or too short to answer).
        case drop
    }

    /// Where a name falls.
    public enum NameMatch: Equatable, Sendable {
        /// A service name: the label to look up, in lower case.
        case service(String)
        /// The cluster domain itself.
        case domain
        /// Another name under the domain, or a single label that names no service.
        case unknown
        /// Outside the cluster domain.
        case external
    }

    public let configuration: Configuration
    public let resolver: any ServiceNameResolver

    public init(configuration: Configuration = Configuration(), resolver: any ServiceNameResolver) {
        self.configuration = configuration
        self.resolver = resolver
    }

    // MARK: - Events

    /// A message arrived from a client.
    public func messageReceived(_ bytes: [UInt8], over transport: Transport) -> Action {
        guard let header = DNSMessage.peekHeader(bytes), !header.isResponse else { return .drop }
        let query: DNSMessage
        do {
            query = try DNSMessage(parsing: bytes)
        } catch {
            // The ID and opcode are readable: tell the client its message was malformed (RFC 1035 §4.1.1).
            var reply = DNSMessage(id: header.id, isResponse: true, opcode: header.opcode, responseCode: .formatError)
            reply.recursionAvailable = true
            return .reply(reply.encoded())
        }
        guard query.opcode == 0 else { return .reply(response(to: query, code: .notImplemented).encoded()) }
        guard query.questions.count == 1, let question = query.questions.first else {
            return .reply(response(to: query, code: .formatError).encoded())
        }
        if let edns = query.edns, edns.version > 0 {
            return .reply(response(to: query, code: .badVersion).encoded())
        }
        var reply = response(to: query, code: .noError)
        switch match(question.name) {
        case .external:
            return .forward(query)
        case .service(let name):
            let addresses = resolver.addresses(ofService: name)
            reply.isAuthoritative = true
            if addresses.isEmpty {
                reply.responseCode = .nameError
            } else if [.a, .any].contains(question.type), [.internet, .any].contains(question.recordClass) {
                reply.answers = addresses.map { DNSResourceRecord.a(question.name, address: $0.value, ttl: configuration.ttl) }
            }
        case .domain:
            reply.isAuthoritative = true
        case .unknown:
            reply.isAuthoritative = true
            reply.responseCode = .nameError
        }
        return .reply(fitted(reply, to: query, over: transport))
    }

    /// No upstream resolver answered a forwarded query.
    public func serverFailure(for query: DNSMessage, over transport: Transport) -> [UInt8] {
        fitted(response(to: query, code: .serverFailure), to: query, over: transport)
    }

    // MARK: - Names

    /// Where `name` falls (see the type's description).
    public func match(_ name: DNSName) -> NameMatch {
        let domain = configuration.domain
        if name.hasSuffix(domain) {
            let inside = name.labels.count - domain.labels.count
            switch inside {
            case 0: return .domain
            case 1: return .service(Self.text(name.labels[0]))
            default: return .unknown
            }
        }
        guard name.labels.count == 1 else { return .external }
        let label = Self.text(name.labels[0])
        return resolver.addresses(ofService: label).isEmpty ? .unknown : .service(label)
    }

    /// Text names ("web", "WEB.flotilla.internal."); an unparsable name is external (the upstream says why).
    public func match(_ text: String) -> NameMatch {
        DNSName(text).map { match($0) } ?? .external
    }

    private static func text(_ label: [UInt8]) -> String {
        String(decoding: label.map(DNSName.lowercase), as: UTF8.self)
    }

    // MARK: - Building responses

    /// A response with the query's ID, opcode, question and RD, recursion available, and OPT when the query had it.
    private func response(to query: DNSMessage, code: DNSResponseCode) -> DNSMessage {
        DNSMessage(
            id: query.id, isResponse: true, opcode: query.opcode, recursionDesired: query.recursionDesired, recursionAvailable: true,
            checkingDisabled: query.checkingDisabled, responseCode: code, questions: query.questions,
            edns: query.edns.map { _ in DNSMessage.EDNS(udpPayloadSize: configuration.maxUDPPayloadSize) })
    }

    /// The response's bytes, or, when they exceed what the client can take over UDP, the response without its
    /// records and with TC set.
    private func fitted(_ response: DNSMessage, to query: DNSMessage, over transport: Transport) -> [UInt8] {
        let bytes = response.encoded()
        guard transport == .udp else { return bytes }
        let offered = query.edns.map { max(Int($0.udpPayloadSize), DNSMessage.classicUDPSize) } ?? DNSMessage.classicUDPSize
        guard bytes.count > min(offered, max(Int(configuration.maxUDPPayloadSize), DNSMessage.classicUDPSize)) else { return bytes }
        var truncated = response
        truncated.answers = []
        truncated.authorities = []
        truncated.additionals = []
        truncated.isTruncated = true
        return truncated.encoded()
    }
}

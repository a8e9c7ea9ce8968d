import ClusterModel
import LoadBalancer
import Testing

/// What the node's DNS responder answers, decided without sockets: service names under the cluster domain and
/// bare, NXDOMAIN for other cluster names, forwarding for the rest, FORMERR for what cannot be read, and TC when
/// an answer does not fit a UDP datagram.
@Suite("DNS responder: answers for service names")
struct ServiceDNSResponderTests {
    static let vip = IPv4Address("10.96.0.10")!
    static let table = ServiceNameTable(["web": [vip], "Api": [IPv4Address("10.96.0.11")!]])
    static let responder = ServiceDNSResponder(resolver: table)

    static func query(
        _ name: String, type: DNSRecordType = .a, id: UInt16 = 0x1234, edns: DNSMessage.EDNS? = nil, opcode: UInt8 = 0
    ) -> [UInt8] {
        DNSMessage(id: id, opcode: opcode, recursionDesired: true, questions: [DNSQuestion(name: DNSName(name)!, type: type)], edns: edns).encoded()
    }

    /// The reply the responder gives, parsed; nil when it forwards or drops.
    static func reply(
        to bytes: [UInt8], over transport: ServiceDNSResponder.Transport = .udp, responder: ServiceDNSResponder = responder
    ) throws -> DNSMessage? {
        guard case .reply(let reply) = responder.messageReceived(bytes, over: transport) else { return nil }
        return try DNSMessage(parsing: reply)
    }

    @Test("SERVICE and SERVICE.flotilla.internal, in any case and with or without the trailing dot, are service names")
    func nameMatching() {
        let responder = Self.responder
        for name in ["web", "WEB", "web.", "web.flotilla.internal", "Web.Flotilla.INTERNAL", "web.flotilla.internal."] {
            #expect(responder.match(name) == .service("web"), "\(name)")
        }
        #expect(responder.match("api") == .service("api"))
        #expect(responder.match("nope.flotilla.internal") == .service("nope"))
        #expect(responder.match("flotilla.internal.") == .domain)
        #expect(responder.match("a.web.flotilla.internal") == .unknown)
        #expect(responder.match("nope") == .unknown)
        #expect(responder.match("web.example.com") == .external)
        #expect(responder.match("flotilla.internal.example.com") == .external)
        #expect(responder.match("example.com.") == .external)
    }

    @Test("an A query for a service gets its virtual IP: authoritative, TTL 5 s, the question and ID echoed as sent")
    func answersServiceName() throws {
        for name in ["web", "WEB.flotilla.internal", "web.flotilla.internal."] {
            let reply = try #require(try Self.reply(to: Self.query(name)))
            #expect(reply.id == 0x1234 && reply.isResponse && reply.isAuthoritative && reply.recursionDesired && reply.recursionAvailable)
            #expect(reply.responseCode == .noError && !reply.isTruncated)
            #expect(reply.questions == [DNSQuestion(name: DNSName(name)!, type: .a)])
            #expect(reply.answers == [.a(DNSName(name)!, address: Self.vip.value, ttl: 5)])
        }
    }

    @Test("AAAA and other types for a known service: NOERROR with no answers; ANY gets the A records")
    func otherTypes() throws {
        for type in [DNSRecordType.aaaa, .mx, .txt, .srv] {
            let reply = try #require(try Self.reply(to: Self.query("web.flotilla.internal", type: type)))
            #expect(reply.responseCode == .noError && reply.answers.isEmpty && reply.isAuthoritative, "\(type)")
        }
        let any = try #require(try Self.reply(to: Self.query("web", type: .any)))
        #expect(any.answers.compactMap(\.ipv4Address) == [Self.vip.value])
    }

    @Test("unknown names under the cluster domain, and unknown bare names, are NXDOMAIN; the domain itself exists")
    func unknownNames() throws {
        for name in ["nope.flotilla.internal", "nope", "a.web.flotilla.internal", "NOPE.Flotilla.Internal."] {
            let reply = try #require(try Self.reply(to: Self.query(name)))
            #expect(reply.responseCode == .nameError && reply.answers.isEmpty && reply.isAuthoritative, "\(name)")
        }
        let aaaa = try #require(try Self.reply(to: Self.query("nope.flotilla.internal", type: .aaaa)))
        #expect(aaaa.responseCode == .nameError)
        let apex = try #require(try Self.reply(to: Self.query("flotilla.internal")))
        #expect(apex.responseCode == .noError && apex.answers.isEmpty)
    }

    @Test("names outside the cluster domain are forwarded as they came; a failed forward is SERVFAIL")
    func forwarding() throws {
        let bytes = Self.query("example.com", edns: .init(udpPayloadSize: 4096))
        guard case .forward(let query) = Self.responder.messageReceived(bytes, over: .udp) else {
            Issue.record("example.com was not forwarded")
            return
        }
        #expect(query.questions.first?.name == DNSName("example.com"))
        let failure = try DNSMessage(parsing: Self.responder.serverFailure(for: query, over: .udp))
        #expect(failure.id == 0x1234 && failure.responseCode == .serverFailure && failure.questions == query.questions)
        #expect(failure.edns == DNSMessage.EDNS(udpPayloadSize: 1232))
    }

    @Test("the table follows updates: a service added answers, a removed one is NXDOMAIN again")
    func tableUpdates() throws {
        let table = ServiceNameTable()
        let responder = ServiceDNSResponder(resolver: table)
        #expect(try Self.reply(to: Self.query("db"), responder: responder)?.responseCode == .nameError)
        table.set([IPv4Address("10.96.0.20")!], forService: "DB")
        #expect(try Self.reply(to: Self.query("db.flotilla.internal"), responder: responder)?.answers.compactMap(\.ipv4Address) == [0x0A60_0014])
        table.replaceAll(["cache": [Self.vip]])
        #expect(try Self.reply(to: Self.query("db"), responder: responder)?.responseCode == .nameError)
        #expect(table.all == ["cache": [Self.vip]])
        table.remove(service: "CACHE")
        #expect(table.all.isEmpty)
    }

    @Test("what cannot be read gets FORMERR with the client's ID; runts and responses get nothing")
    func malformed() throws {
        // Truncated question.
        let cut = try #require(try Self.reply(to: Array(Self.query("web").dropLast(3))))
        #expect(cut.id == 0x1234 && cut.isResponse && cut.responseCode == .formatError && cut.questions.isEmpty)
        // Two questions.
        let two = DNSMessage(id: 9, questions: [DNSQuestion(name: DNSName("web")!, type: .a), DNSQuestion(name: DNSName("api")!, type: .a)])
        #expect(try Self.reply(to: two.encoded())?.responseCode == .formatError)
        // No question.
        #expect(try Self.reply(to: DNSMessage(id: 9).encoded())?.responseCode == .formatError)
        // A pointer loop.
        let loop: [UInt8] = [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]
        #expect(try Self.reply(to: loop)?.responseCode == .formatError)
        // Too short for a header, or a response (answering it could loop between two servers).
        #expect(Self.responder.messageReceived([0x12, 0x34, 0x01], over: .udp) == .drop)
        #expect(Self.responder.messageReceived([], over: .udp) == .drop)
        let response = DNSMessage(id: 5, isResponse: true, questions: [DNSQuestion(name: DNSName("web")!, type: .a)]).encoded()
        #expect(Self.responder.messageReceived(response, over: .udp) == .drop)
    }

    @Test("other opcodes are NOTIMP; an EDNS version above 0 is BADVERS; EDNS queries get OPT back")
    func opcodesAndEDNS() throws {
        #expect(try Self.reply(to: Self.query("web", opcode: 2))?.responseCode == .notImplemented)
        let badVersion = try #require(try Self.reply(to: Self.query("web", edns: .init(udpPayloadSize: 1232, version: 1))))
        #expect(badVersion.responseCode == .badVersion && badVersion.edns != nil && badVersion.answers.isEmpty)
        let edns = try #require(try Self.reply(to: Self.query("web", edns: .init(udpPayloadSize: 4096))))
        #expect(edns.edns == DNSMessage.EDNS(udpPayloadSize: 1232) && edns.answers.count == 1)
        #expect(try Self.reply(to: Self.query("web"))?.edns == nil)
    }

    @Test("an answer too big for 512 bytes of UDP is sent empty with TC; EDNS raises the limit; TCP carries it all")
    func truncation() throws {
        // 40 addresses: 12 + 27 + 40 × 16 = 679 bytes.
        let many = (1...40).map { IPv4Address(0x0A60_0100 + UInt32($0)) }
        let responder = ServiceDNSResponder(resolver: ServiceNameTable(["big": many]))
        let udp = try #require(try Self.reply(to: Self.query("big.flotilla.internal"), responder: responder))
        #expect(udp.isTruncated && udp.answers.isEmpty && udp.responseCode == .noError && udp.questions.count == 1)
        let tcp = try #require(try Self.reply(to: Self.query("big.flotilla.internal"), over: .tcp, responder: responder))
        #expect(!tcp.isTruncated && tcp.answers.count == 40)
        let edns = try #require(try Self.reply(to: Self.query("big.flotilla.internal", edns: .init(udpPayloadSize: 1232)), responder: responder))
        #expect(!edns.isTruncated && edns.answers.count == 40)
        // The client offers less than 512: 512 still applies.
        let small = try #require(try Self.reply(to: Self.query("big.flotilla.internal", edns: .init(udpPayloadSize: 256)), responder: responder))
        #expect(small.isTruncated)
        // 100 addresses exceed even the 1232 bytes this server sends over UDP.
        let more = ServiceDNSResponder(resolver: ServiceNameTable(["big": (1...100).map { IPv4Address(0x0A60_0100 + UInt32($0)) }]))
        let capped = try #require(try Self.reply(to: Self.query("big", edns: .init(udpPayloadSize: 65_000)), responder: more))
        #expect(capped.isTruncated)
    }

    @Test("any bytes at all get a drop, a reply or a forward, never a crash (seeded)")
    func fuzz() throws {
        var random = SplitMix64(seed: 0x5E4F_1CE5)
        let valid = Self.query("web.flotilla.internal", edns: .init(udpPayloadSize: 1232))
        var outcomes: [String: Int] = [:]
        for _ in 0..<10_000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &random)))
            switch Self.responder.messageReceived(bytes, over: .udp) {
            case .drop: outcomes["drop", default: 0] += 1
            case .forward: outcomes["forward", default: 0] += 1
            case .reply(let reply):
                let code = try DNSMessage(parsing: reply).responseCode
                outcomes["\(code)", default: 0] += 1
                #expect(reply.count <= 512)
            }
        }
        print("responder fuzz, 10000 corrupted queries: \(outcomes.sorted { $0.key < $1.key })")
        #expect(outcomes["FORMERR", default: 0] > 0)
    }
}

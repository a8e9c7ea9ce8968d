import LoadBalancer
import Testing

/// The DNS message codec (RFC 1035 §4.1): what it writes it reads back, it reads what real clients send, and no
/// malformed input crashes it or makes it allocate what a count or length merely claims.
@Suite("DNS message codec")
struct DNSMessageTests {
    static let web = DNSName("web.flotilla.internal")!

    /// A query as dig sends it: ID 0xBEEF, RD, one question (web.flotilla.internal A IN), an OPT record offering
    /// 1232 bytes.
    static let digQuery: [UInt8] = [
        0xBE, 0xEF, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        3, 0x77, 0x65, 0x62, 8, 0x66, 0x6C, 0x6F, 0x74, 0x69, 0x6C, 0x6C, 0x61, 8, 0x69, 0x6E, 0x74, 0x65, 0x72, 0x6E, 0x61, 0x6C, 0,
        0x00, 0x01, 0x00, 0x01,
        0x00, 0x00, 0x29, 0x04, 0xD0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]

    static func header(id: UInt16 = 7, flags: UInt16 = 0x0100, counts: [UInt16] = [1, 0, 0, 0]) -> [UInt8] {
        ([id, flags] + counts).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    static func parseError(_ bytes: [UInt8]) -> DNSMessageError? {
        do {
            _ = try DNSMessage(parsing: bytes)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Round trips

    @Test("a query as dig sends it is read field by field, and written back byte for byte")
    func digQueryRoundTrip() throws {
        let query = try DNSMessage(parsing: Self.digQuery)
        #expect(query.id == 0xBEEF)
        #expect(!query.isResponse && query.opcode == 0 && query.recursionDesired && query.authenticData)
        #expect(query.questions == [DNSQuestion(name: Self.web, type: .a)])
        #expect(query.edns == DNSMessage.EDNS(udpPayloadSize: 1232))
        #expect(query.additionals.isEmpty)
        #expect(query.encoded() == Self.digQuery)
    }

    @Test("a response with several answers and an extended response code reads back equal; repeated names become pointers")
    func responseRoundTrip() throws {
        let response = DNSMessage(
            id: 42, isResponse: true, isAuthoritative: true, recursionDesired: true, recursionAvailable: true, responseCode: .badVersion,
            questions: [DNSQuestion(name: Self.web, type: .a)],
            answers: [
                .a(Self.web, address: 0x0A60_0001, ttl: 5), .a(Self.web, address: 0x0A60_0002, ttl: 5),
                DNSResourceRecord(name: DNSName("api.flotilla.internal")!, type: .txt, ttl: 60, data: [3, 0x61, 0x62, 0x63]),
            ],
            authorities: [DNSResourceRecord(name: DNSName("flotilla.internal")!, type: .ns, ttl: 60, data: [])],
            additionals: [DNSResourceRecord(name: .root, type: DNSRecordType(rawValue: 99), recordClass: .any, ttl: 1, data: [9])],
            edns: DNSMessage.EDNS(udpPayloadSize: 4096, dnssecOK: true, options: [0, 10, 0, 2, 0xAB, 0xCD]))
        let bytes = response.encoded()
        #expect(try DNSMessage(parsing: bytes) == response)
        // Question name 23 bytes; each A answer's name is a 2-byte pointer; "api" + pointer to "flotilla.internal".
        let uncompressed = 12 + 27 + 2 * (23 + 14) + (4 + 2 + 14) + (2 + 10) + (1 + 11)
        print("response of \(bytes.count) bytes (\(uncompressed) would be the size without compression pointers)")
        #expect(bytes.count == 12 + 27 + 2 * (2 + 14) + (4 + 2 + 14) + (2 + 10) + (1 + 11) + (1 + 10 + 6))
        #expect(try DNSMessage(parsing: bytes).answers.compactMap(\.ipv4Address) == [0x0A60_0001, 0x0A60_0002])
    }

    @Test("the case a client sent is echoed exactly: compression reuses only byte-equal names")
    func caseIsKept() throws {
        let mixed = DNSName("WeB.Flotilla.Internal")!
        let response = DNSMessage(
            id: 1, isResponse: true, questions: [DNSQuestion(name: mixed, type: .a)],
            answers: [.a(mixed, address: 1, ttl: 5), .a(Self.web, address: 2, ttl: 5)])
        let parsed = try DNSMessage(parsing: response.encoded())
        #expect(parsed.questions[0].name == mixed)
        #expect(parsed.answers.map(\.name) == [mixed, Self.web])
        #expect(parsed.answers[1].name.matches(mixed))
    }

    // MARK: - Names

    @Test("names: a trailing dot is optional, letters compare without case, labels keep to 63 bytes and names to 255")
    func names() {
        #expect(DNSName("web.flotilla.internal.") == Self.web)
        #expect(DNSName("WEB.FLOTILLA.INTERNAL")!.matches(Self.web))
        #expect(DNSName("WEB.FLOTILLA.INTERNAL") != Self.web)
        #expect(DNSName("Web.Flotilla.Internal")!.lowercased() == Self.web)
        #expect(Self.web.hasSuffix(DNSName("FLOTILLA.internal")!))
        #expect(!DNSName("flotilla.internal")!.hasSuffix(Self.web))
        #expect(!DNSName("webflotilla.internal")!.hasSuffix(DNSName("lotilla.internal")!))
        #expect(DNSName(".") == .root && DNSName(".")!.description == "." && DNSName.root.wireLength == 1)
        #expect(Self.web.description == "web.flotilla.internal" && Self.web.wireLength == 23)
        #expect(DNSName("a..b") == nil)
        #expect(DNSName(String(repeating: "x", count: 63)) != nil)
        #expect(DNSName(String(repeating: "x", count: 64)) == nil)
        let longest = Array(repeating: String(repeating: "x", count: 63), count: 3).joined(separator: ".") + "." + String(repeating: "y", count: 61)
        #expect(DNSName(longest)?.wireLength == 255)
        #expect(DNSName(longest + "y") == nil)
        #expect(DNSName(labels: [[0x61, 0x2E, 0x00]])?.description == "a\\046\\000")
    }

    // MARK: - Malformed input

    @Test("a header shorter than 12 bytes is truncated, not read")
    func shortHeader() {
        for length in [0, 1, 11] {
            let bytes = Array(Self.digQuery.prefix(length))
            #expect(Self.parseError(bytes)?.code == .truncated)
            #expect(DNSMessage.peekHeader(bytes) == nil)
        }
    }

    @Test("a message cut anywhere inside its sections fails as truncated")
    func truncatedEverywhere() {
        for length in 12..<Self.digQuery.count {
            #expect(Self.parseError(Array(Self.digQuery.prefix(length)))?.code == .truncated, "cut at \(length)")
        }
    }

    @Test("label bytes with the reserved top bits 01 or 10 are refused")
    func reservedLabelTypes() {
        for type: UInt8 in [0x40, 0x80, 0x7F, 0xBF] {
            let error = Self.parseError(Self.header() + [3, 0x77, 0x65, 0x62, type, 0, 0, 1, 0, 1])
            #expect(error?.code == .badLabel)
            #expect(error?.offset == 16)
        }
    }

    @Test("a label longer than what is left of the message is truncated")
    func labelPastTheEnd() {
        #expect(Self.parseError(Self.header() + [63, 0x61, 0x62])?.code == .truncated)
    }

    @Test("a compression pointer to itself, into its own name, or forward is refused (no loop can be followed)")
    func pointerLoops() {
        // At 12: a pointer to 12 (itself).
        #expect(Self.parseError(Self.header() + [0xC0, 12, 0, 1, 0, 1])?.code == .badPointer)
        // At 12: label "a", then a pointer back to 12 (the name's own start).
        #expect(Self.parseError(Self.header() + [1, 0x61, 0xC0, 12, 0, 1, 0, 1])?.code == .badPointer)
        // A pointer forward, past the end of the message.
        #expect(Self.parseError(Self.header() + [0xC0, 0xFF, 0, 1, 0, 1])?.code == .badPointer)
        // Two names pointing at each other: the answer's name at 29 points to 12, whose name points to 29.
        let question: [UInt8] = [1, 0x61, 0xC0, 29] + [0, 1, 0, 1]
        let answer: [UInt8] = [1, 0x62, 0xC0, 12] + [0, 1, 0, 1, 0, 0, 0, 5, 0, 0]
        let twoNames = Self.header(counts: [1, 1, 0, 0]) + question + Array(repeating: 0, count: 29 - 12 - question.count) + answer
        #expect(Self.parseError(twoNames)?.code == .badPointer)
        // A pointer cut in half by the end of the message.
        #expect(Self.parseError(Self.header() + [0xC0])?.code == .truncated)
    }

    @Test("pointers to earlier names are followed, and a name they make longer than 255 bytes is refused")
    func pointerChains() throws {
        let label = [UInt8(63)] + Array(repeating: UInt8(ascii: "x"), count: 63)
        // Answers whose names each add a 63-byte label in front of the previous answer's name.
        func message(answers: Int) -> [UInt8] {
            var bytes = Self.header(flags: 0x8100, counts: [0, UInt16(answers), 0, 0])
            var previous: Int?
            for _ in 0..<answers {
                let start = bytes.count
                bytes += label + (previous.map { [0xC0 | UInt8($0 >> 8), UInt8($0 & 0xFF)] } ?? [0])
                bytes += [0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]
                previous = start
            }
            return bytes
        }
        let three = try DNSMessage(parsing: message(answers: 3))
        #expect(three.answers.map(\.name.wireLength) == [65, 129, 193])
        #expect(Self.parseError(message(answers: 4))?.code == .nameTooLong)
    }

    @Test("huge counts with no records behind them fail at the end of the message, quickly")
    func hugeCounts() {
        let clock = ContinuousClock()
        var error: DNSMessageError?
        let elapsed = clock.measure {
            error = Self.parseError(Self.header(counts: [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]) + [0, 0, 1, 0, 1])
        }
        #expect(error?.code == .truncated)
        print("65,535 of each record claimed by a 17-byte message: refused in \(elapsed)")
        // Record data longer than the message.
        let record: [UInt8] = [0, 0, 1, 0, 1, 0, 0, 0, 5, 0xFF, 0xFF, 1, 2, 3]
        #expect(Self.parseError(Self.header(counts: [0, 1, 0, 0]) + record)?.code == .truncated)
    }

    @Test("a second OPT record, or one not owned by the root, is refused")
    func badOPT() {
        let opt: [UInt8] = [0, 0, 0x29, 0x02, 0x00, 0, 0, 0, 0, 0, 0]
        let question: [UInt8] = [1, 0x61, 0, 0, 1, 0, 1]
        #expect(Self.parseError(Self.header(counts: [1, 0, 0, 2]) + question + opt + opt)?.code == .badOPT)
        let owned: [UInt8] = [1, 0x61, 0, 0, 0x29, 0x02, 0x00, 0, 0, 0, 0, 0, 0]
        #expect(Self.parseError(Self.header(counts: [1, 0, 0, 1]) + question + owned)?.code == .badOPT)
    }

    @Test("random bytes and random corruptions of a valid query never crash the codec (seeded)")
    func fuzz() {
        var random = SplitMix64(seed: 0xD15C_0DE5)
        var parsed = 0
        var refused: [String: Int] = [:]
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...80, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                bytes = Self.digQuery
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            }
            do {
                let message = try DNSMessage(parsing: bytes)
                parsed += 1
                // What was read writes out and reads back to the same message.
                #expect(try DNSMessage(parsing: message.encoded()) == message)
            } catch {
                refused[error.code.name, default: 0] += 1
            }
        }
        print("fuzz: \(parsed) of 20000 parsed; refused by reason: \(refused.sorted { $0.key < $1.key })")
        #expect(parsed > 0 && !refused.isEmpty)
    }
}

/// A seeded generator (SplitMix64), so a failing fuzz round can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

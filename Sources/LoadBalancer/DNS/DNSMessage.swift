/// A DNS message (RFC 1035 §4.1): header, question, answer, authority and additional sections, with EDNS(0)
/// (RFC 6891) taken out of the additional section into `edns`. Pure: bytes in, bytes out, no I/O.
///
/// `init(parsing:)` never traps and never allocates what a count or length field merely claims: every record
/// it keeps is made of bytes that are there. `encoded()` compresses names (§4.1.4).
public struct DNSMessage: Equatable, Sendable {
    public var id: UInt16
    /// QR: a response (true) or a query.
    public var isResponse: Bool
    /// 0 is a standard query (QUERY); 4 bits.
    public var opcode: UInt8
    /// AA: the answer comes from the zone's own server.
    public var isAuthoritative: Bool
    /// TC: the answer did not fit; ask again over TCP.
    public var isTruncated: Bool
    /// RD: the client asks for recursion (copied into the response).
    public var recursionDesired: Bool
    /// RA: the server recurses (this one forwards names outside the cluster domain).
    public var recursionAvailable: Bool
    /// AD and CD (RFC 4035 §3.2): kept so a parsed message encodes back to the same header.
    public var authenticData: Bool
    public var checkingDisabled: Bool
    /// The full response code: the header holds its low 4 bits, the OPT record (when `edns` is set) the high 8.
    public var responseCode: DNSResponseCode
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
    public var authorities: [DNSResourceRecord]
    /// Additional records other than OPT.
    public var additionals: [DNSResourceRecord]
    /// The OPT pseudo-record's contents; nil when the message has none.
    public var edns: EDNS?

    public init(
        id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, isAuthoritative: Bool = false, isTruncated: Bool = false,
        recursionDesired: Bool = false, recursionAvailable: Bool = false, authenticData: Bool = false, checkingDisabled: Bool = false,
        responseCode: DNSResponseCode = .noError, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
        authorities: [DNSResourceRecord] = [], additionals: [DNSResourceRecord] = [], edns: EDNS? = nil
    ) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.responseCode = responseCode
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }

    /// The size of the fixed header (§4.1.1).
    public static let headerSize = 12
    /// The largest message over UDP without EDNS (§4.2.1).
    public static let classicUDPSize = 512

    /// EDNS(0) from the OPT pseudo-record (RFC 6891 §6.1).
    public struct EDNS: Equatable, Sendable {
        /// The largest UDP payload the sender can reassemble (values below 512 mean 512).
        public var udpPayloadSize: UInt16
        /// The EDNS version; only 0 exists.
        public var version: UInt8
        /// DO: the sender wants DNSSEC records.
        public var dnssecOK: Bool
        /// The options (code, length, data)*, as on the wire.
        public var options: [UInt8]

        public init(udpPayloadSize: UInt16, version: UInt8 = 0, dnssecOK: Bool = false, options: [UInt8] = []) {
            self.udpPayloadSize = udpPayloadSize
            self.version = version
            self.dnssecOK = dnssecOK
            self.options = options
        }
    }
}

/// One entry of the question section: what is asked.
public struct DNSQuestion: Equatable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: DNSRecordClass

    public init(name: DNSName, type: DNSRecordType, recordClass: DNSRecordClass = .internet) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// One resource record (§4.1.3); its data stays bytes (only A records are built here).
public struct DNSResourceRecord: Equatable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: DNSRecordClass
    /// Seconds a resolver may cache it.
    public var ttl: UInt32
    /// At most 65,535 bytes (encoding cuts what is longer).
    public var data: [UInt8]

    public init(name: DNSName, type: DNSRecordType, recordClass: DNSRecordClass = .internet, ttl: UInt32, data: [UInt8]) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }

    /// An A record: the IPv4 address (a number, 10.96.0.1 is 0x0A60_0001) as its 4 bytes, network order.
    public static func a(_ name: DNSName, address: UInt32, ttl: UInt32) -> DNSResourceRecord {
        DNSResourceRecord(
            name: name, type: .a, ttl: ttl,
            data: [UInt8(address >> 24), UInt8(address >> 16 & 0xFF), UInt8(address >> 8 & 0xFF), UInt8(address & 0xFF)])
    }

    /// The address of an A record of the internet class; nil for any other record.
    public var ipv4Address: UInt32? {
        guard type == .a, recordClass == .internet, data.count == 4 else { return nil }
        return data.reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// A record type (QTYPE/TYPE); the ones Flotilla names, any other by number.
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSRecordType(rawValue: 1)
    public static let ns = DNSRecordType(rawValue: 2)
    public static let cname = DNSRecordType(rawValue: 5)
    public static let soa = DNSRecordType(rawValue: 6)
    public static let ptr = DNSRecordType(rawValue: 12)
    public static let mx = DNSRecordType(rawValue: 15)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let srv = DNSRecordType(rawValue: 33)
    /// EDNS's pseudo-record (RFC 6891).
    public static let opt = DNSRecordType(rawValue: 41)
    /// QTYPE * (all records).
    public static let any = DNSRecordType(rawValue: 255)

    public var description: String {
        let names: [UInt16: String] = [1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 41: "OPT", 255: "ANY"]
        return names[rawValue] ?? "TYPE\(rawValue)"
    }
}

/// A record class (QCLASS/CLASS).
public struct DNSRecordClass: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IN.
    public static let internet = DNSRecordClass(rawValue: 1)
    /// QCLASS * (any class).
    public static let any = DNSRecordClass(rawValue: 255)
}

/// RCODE, with EDNS's extended codes (12 bits).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let noError = DNSResponseCode(rawValue: 0)
    /// FORMERR: the query could not be read.
    public static let formatError = DNSResponseCode(rawValue: 1)
    /// SERVFAIL: the server could not answer (here: no upstream resolver answered).
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    /// NXDOMAIN: the name does not exist.
    public static let nameError = DNSResponseCode(rawValue: 3)
    /// NOTIMP: a kind of query this server does not do.
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)
    /// BADVERS: an EDNS version this server does not speak (RFC 6891 §6.1.3).
    public static let badVersion = DNSResponseCode(rawValue: 16)

    public var description: String {
        let names: [UInt16: String] = [0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"]
        return names[rawValue] ?? "RCODE\(rawValue)"
    }
}

/// A domain name as its labels (§3.1). Labels are bytes, not text: on the wire a label may hold any byte.
/// `==` is exact; `matches(_:)` and `hasSuffix(_:)` compare ASCII letters case-insensitively (§2.3.3).
/// Invariants: no empty label, labels of at most 63 bytes, at most 255 bytes on the wire.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    public let labels: [[UInt8]]

    public static let root = DNSName(checked: [])
    public static let maxLabelLength = 63
    public static let maxWireLength = 255

    /// Nil when a label is empty or longer than 63 bytes, or the name exceeds 255 bytes on the wire.
    public init?(labels: [[UInt8]]) {
        guard labels.allSatisfy({ !$0.isEmpty && $0.count <= Self.maxLabelLength }),
              Self.wireLength(of: labels) <= Self.maxWireLength else { return nil }
        self.labels = labels
    }

    /// Parses dotted text ("web", "web.flotilla.internal", "web.flotilla.internal."); "." is the root. Nil for
    /// an empty label ("a..b") or a name too long for DNS.
    public init?(_ text: String) {
        guard text != "." else {
            self = .root
            return
        }
        let trimmed = text.hasSuffix(".") ? text.dropLast() : Substring(text)
        self.init(labels: trimmed.split(separator: ".", omittingEmptySubsequences: false).map { Array($0.utf8) })
    }

    init(checked labels: [[UInt8]]) { self.labels = labels }

    /// Bytes on the wire, uncompressed: a length byte per label, the labels, the root's zero byte.
    public var wireLength: Int { Self.wireLength(of: labels) }

    static func wireLength(of labels: [[UInt8]]) -> Int {
        labels.reduce(1) { $0 + 1 + $1.count }
    }

    /// The same name with ASCII letters in lower case.
    public func lowercased() -> DNSName {
        DNSName(checked: labels.map { $0.map(Self.lowercase) })
    }

    /// Equal ignoring the case of ASCII letters.
    public func matches(_ other: DNSName) -> Bool {
        labels.count == other.labels.count && zip(labels, other.labels).allSatisfy(Self.sameLabel)
    }

    /// Whether this name ends with `suffix`'s labels (ignoring case); every name ends with the root.
    public func hasSuffix(_ suffix: DNSName) -> Bool {
        labels.count >= suffix.labels.count && zip(labels.suffix(suffix.labels.count), suffix.labels).allSatisfy(Self.sameLabel)
    }

    /// Dotted text with a trailing dot's absence ("web.flotilla.internal"; "." for the root); a dot, backslash or
    /// a byte outside printable ASCII inside a label is escaped as \DDD (RFC 4343 §2.1).
    public var description: String {
        guard !labels.isEmpty else { return "." }
        return labels.map { label in
            label.map { byte -> String in
                (0x21...0x7E).contains(byte) && byte != UInt8(ascii: ".") && byte != UInt8(ascii: "\\")
                    ? String(UnicodeScalar(byte)) : "\\" + String(1000 + Int(byte)).dropFirst()
            }.joined()
        }.joined(separator: ".")
    }

    static func lowercase(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
    }

    static func sameLabel(_ pair: ([UInt8], [UInt8])) -> Bool {
        pair.0.count == pair.1.count && zip(pair.0, pair.1).allSatisfy { lowercase($0) == lowercase($1) }
    }
}

/// A message that cannot be read, with where and why; the responder answers FORMERR.
public struct DNSMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        /// The message ends before what its header or a length field announces.
        public static let truncated = Code(name: "truncated")
        /// A label length byte with the reserved top bits 01 or 10 (§4.1.4 uses only 00 and 11).
        public static let badLabel = Code(name: "bad label")
        /// A compression pointer that does not point back to an earlier name (a loop, or past the end).
        public static let badPointer = Code(name: "bad pointer")
        /// A name longer than 255 bytes.
        public static let nameTooLong = Code(name: "name too long")
        /// A second OPT record, or one whose owner is not the root (RFC 6891 §6.1.1).
        public static let badOPT = Code(name: "bad OPT record")
        public var description: String { name }
    }

    public let code: Code
    /// The byte offset where reading failed.
    public let offset: Int
    public let message: String

    public init(_ code: Code, at offset: Int, _ message: String) {
        self.code = code
        self.offset = offset
        self.message = message
    }

    public var description: String { "malformed DNS message at byte \(offset): \(message)" }
}

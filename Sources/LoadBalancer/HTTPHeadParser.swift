#if canImport(Glibc)
import Glibc
#endif

/// Finds and checks one HTTP/1.1 message head (RFC 9112 sections 2–5) at the start of a byte buffer, without
/// copying it: the start line's parts and every field line become offsets into the bytes, and the fields the
/// balancer acts on are recognised by name on the way. It can be fed a growing buffer (the same head bytes
/// first, more appended): it resumes where it stopped, so a head that arrives in pieces is scanned once.
///
/// What it refuses: a head over 64 KiB or with more than 256 fields, a malformed start line, a field name that
/// is not a token (whitespace before the colon included), obsolete line folding, a control character in a
/// value, and a CR not followed by LF. A bare LF ends a line (RFC 9112 section 2.2 allows it); that is safe
/// because the balancer writes every head it forwards anew, with CRLF.
struct HTTPHeadParser {
    enum Kind { case request, response }

    static let maxHeadBytes = 64 * 1024
    static let maxFields = 256

    /// One field line: offsets from the head's first byte; the value without surrounding whitespace.
    struct Field {
        var name: HTTPFieldName
        var nameStart: Int
        var nameEnd: Int
        var valueStart: Int
        var valueEnd: Int
    }

    let kind: Kind
    /// The field lines so far, in order (their storage is kept across `reset()`).
    private(set) var fields: [Field] = []
    /// Request line: the method, its bytes and the request target.
    private(set) var method = HTTPMethod.other
    private(set) var methodRange = 0..<0
    private(set) var targetRange = 0..<0
    /// Status line: the code and the reason phrase.
    private(set) var status = 0
    private(set) var reasonRange = 0..<0
    /// HTTP/1.0 rather than 1.1 (a later 1.x counts as 1.1).
    private(set) var isHTTP10 = false

    private var lineStart = 0
    private var sawStartLine = false

    init(kind: Kind) { self.kind = kind }

    /// Forgets the head, for the next message on the connection.
    mutating func reset() {
        fields.removeAll(keepingCapacity: true)
        lineStart = 0
        sawStartLine = false
    }

    /// Scans `bytes`, whose start is the head's first byte (after any earlier call, the same bytes and maybe
    /// more). Returns the head's length including its final empty line once it is complete, nil while more is
    /// needed.
    mutating func parse(_ bytes: UnsafeRawBufferPointer) throws(HTTPFramingError) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        while true {
            let remaining = bytes.count - lineStart
            guard remaining > 0, let found = memchr(base + lineStart, 0x0A, remaining) else {
                if bytes.count > Self.maxHeadBytes { throw .headTooLarge }
                return nil
            }
            let newline = base.distance(to: UnsafeRawPointer(found))
            if newline >= Self.maxHeadBytes { throw .headTooLarge }
            var lineEnd = newline
            if lineEnd > lineStart && bytes[lineEnd - 1] == ASCII.cr { lineEnd -= 1 }
            let start = lineStart
            lineStart = newline + 1
            if lineEnd == start {
                // An empty line: the end of the head, or (before a start line) one to ignore (section 2.2).
                if sawStartLine { return lineStart }
                continue
            }
            if !sawStartLine {
                switch kind {
                case .request: try parseRequestLine(bytes, start, lineEnd)
                case .response: try parseStatusLine(bytes, start, lineEnd)
                }
                sawStartLine = true
            } else {
                try parseFieldLine(bytes, start, lineEnd)
            }
        }
    }

    // MARK: - Start lines

    /// `method SP request-target SP HTTP-version` with single spaces (section 3).
    private mutating func parseRequestLine(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(HTTPFramingError) {
        var index = start
        while index < end, ASCII.isTokenChar(bytes[index]) { index += 1 }
        guard index > start, index < end, bytes[index] == ASCII.space else {
            throw bytes[start..<end].contains(ASCII.cr) ? .bareCarriageReturn : .badRequestLine
        }
        methodRange = start..<index
        method = HTTPMethod(UnsafeRawBufferPointer(rebasing: bytes[methodRange]))
        index += 1
        let targetStart = index
        while index < end, ASCII.isTargetChar(bytes[index]) { index += 1 }
        guard index > targetStart, index < end, bytes[index] == ASCII.space else {
            throw bytes[start..<end].contains(ASCII.cr) ? .bareCarriageReturn : .badRequestLine
        }
        targetRange = targetStart..<index
        index += 1
        guard end - index == 8, let isHTTP10 = try Self.isVersion10(bytes, at: index) else {
            throw bytes[start..<end].contains(ASCII.cr) ? .bareCarriageReturn : .badRequestLine
        }
        self.isHTTP10 = isHTTP10
    }

    /// `HTTP-version SP 3DIGIT SP [reason-phrase]` (section 4); the space before an empty reason may be missing.
    private mutating func parseStatusLine(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(HTTPFramingError) {
        guard end - start >= 12, let isHTTP10 = try Self.isVersion10(bytes, at: start),
              bytes[start + 8] == ASCII.space,
              ASCII.isDigit(bytes[start + 9]), ASCII.isDigit(bytes[start + 10]), ASCII.isDigit(bytes[start + 11]),
              end == start + 12 || bytes[start + 12] == ASCII.space
        else { throw .badStatusLine }
        self.isHTTP10 = isHTTP10
        status = Int(bytes[start + 9] &- ASCII.zero) * 100 + Int(bytes[start + 10] &- ASCII.zero) * 10
            + Int(bytes[start + 11] &- ASCII.zero)
        let reasonStart = min(start + 13, end)
        for index in reasonStart..<end where !ASCII.isFieldValueChar(bytes[index]) {
            throw bytes[index] == ASCII.cr ? .bareCarriageReturn : .badStatusLine
        }
        reasonRange = reasonStart..<end
    }

    /// `HTTP/d.d` at `index`: whether it is HTTP/1.0 (a later 1.x counts as 1.1); nil when it is no version at
    /// all. Major versions other than 1 are not supported.
    private static func isVersion10(_ bytes: UnsafeRawBufferPointer, at index: Int) throws(HTTPFramingError) -> Bool? {
        guard bytes[index] == UInt8(ascii: "H"), bytes[index + 1] == UInt8(ascii: "T"),
              bytes[index + 2] == UInt8(ascii: "T"), bytes[index + 3] == UInt8(ascii: "P"),
              bytes[index + 4] == UInt8(ascii: "/"), ASCII.isDigit(bytes[index + 5]),
              bytes[index + 6] == UInt8(ascii: "."), ASCII.isDigit(bytes[index + 7])
        else { return nil }
        guard bytes[index + 5] == UInt8(ascii: "1") else { throw .unsupportedVersion }
        return bytes[index + 7] == ASCII.zero
    }

    // MARK: - Field lines

    /// `field-name ":" OWS field-value OWS` (section 5).
    private mutating func parseFieldLine(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(HTTPFramingError) {
        let first = bytes[start]
        if first == ASCII.space || first == ASCII.tab { throw .obsoleteLineFolding }
        var index = start
        while index < end, ASCII.isTokenChar(bytes[index]) { index += 1 }
        guard index > start, index < end, bytes[index] == ASCII.colon else {
            throw bytes[start..<end].contains(ASCII.cr) ? .bareCarriageReturn : .badFieldName
        }
        let nameEnd = index
        index += 1
        while index < end, bytes[index] == ASCII.space || bytes[index] == ASCII.tab { index += 1 }
        let valueStart = index
        while index < end, ASCII.isFieldValueChar(bytes[index]) { index += 1 }
        if index < end { throw bytes[index] == ASCII.cr ? .bareCarriageReturn : .badFieldValue }
        var valueEnd = end
        while valueEnd > valueStart, bytes[valueEnd - 1] == ASCII.space || bytes[valueEnd - 1] == ASCII.tab { valueEnd -= 1 }
        guard fields.count < Self.maxFields else { throw .tooManyFields }
        let name = HTTPFieldName(UnsafeRawBufferPointer(rebasing: bytes[start..<nameEnd]))
        fields.append(Field(name: name, nameStart: start, nameEnd: nameEnd, valueStart: valueStart, valueEnd: valueEnd))
    }
}

/// The request methods the balancer treats differently from others (case-sensitive, RFC 9110 section 9.1).
enum HTTPMethod: UInt8 {
    case get, head, post, put, delete, options, trace, connect, other

    init(_ bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 3 where ASCII.equals(bytes, "GET"): self = .get
        case 3 where ASCII.equals(bytes, "PUT"): self = .put
        case 4 where ASCII.equals(bytes, "HEAD"): self = .head
        case 4 where ASCII.equals(bytes, "POST"): self = .post
        case 5 where ASCII.equals(bytes, "TRACE"): self = .trace
        case 6 where ASCII.equals(bytes, "DELETE"): self = .delete
        case 7 where ASCII.equals(bytes, "OPTIONS"): self = .options
        case 7 where ASCII.equals(bytes, "CONNECT"): self = .connect
        default: self = .other
        }
    }

    /// Safe to send twice (RFC 9110 section 9.2.2): such a request may be replayed on another backend.
    var isIdempotent: Bool {
        switch self {
        case .get, .head, .put, .delete, .options, .trace: true
        case .post, .connect, .other: false
        }
    }
}

/// The header fields the balancer reads or rewrites (names are case-insensitive).
enum HTTPFieldName: UInt8 {
    case other, contentLength, transferEncoding, connection, host, expect, keepAlive, proxyConnection, te, trailer,
         upgrade, proxyAuthorization, xForwardedFor, xForwardedProto

    init(_ name: UnsafeRawBufferPointer) {
        switch name.count {
        case 2 where ASCII.equalsLowercased(name, "te"): self = .te
        case 4 where ASCII.equalsLowercased(name, "host"): self = .host
        case 6 where ASCII.equalsLowercased(name, "expect"): self = .expect
        case 7 where ASCII.equalsLowercased(name, "trailer"): self = .trailer
        case 7 where ASCII.equalsLowercased(name, "upgrade"): self = .upgrade
        case 10 where ASCII.equalsLowercased(name, "connection"): self = .connection
        case 10 where ASCII.equalsLowercased(name, "keep-alive"): self = .keepAlive
        case 14 where ASCII.equalsLowercased(name, "content-length"): self = .contentLength
        case 15 where ASCII.equalsLowercased(name, "x-forwarded-for"): self = .xForwardedFor
        case 16 where ASCII.equalsLowercased(name, "proxy-connection"): self = .proxyConnection
        case 17 where ASCII.equalsLowercased(name, "transfer-encoding"): self = .transferEncoding
        case 17 where ASCII.equalsLowercased(name, "x-forwarded-proto"): self = .xForwardedProto
        case 19 where ASCII.equalsLowercased(name, "proxy-authorization"): self = .proxyAuthorization
        default: self = .other
        }
    }

    /// Fields about one connection (RFC 9110 section 7.6.1), never forwarded.
    var isHopByHop: Bool {
        switch self {
        case .connection, .keepAlive, .proxyConnection, .te, .trailer, .upgrade, .proxyAuthorization: true
        default: false
        }
    }
}

/// Byte classes of RFC 9110/9112, as branch-light tests.
enum ASCII {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let colon = UInt8(ascii: ":")
    static let comma = UInt8(ascii: ",")
    static let semicolon = UInt8(ascii: ";")
    static let zero = UInt8(ascii: "0")

    /// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    @inline(__always)
    static func isTokenChar(_ byte: UInt8) -> Bool {
        // Bit n of the mask for bytes 0–63 / 64–127 says whether byte n is a tchar.
        let low: UInt64 = 0x03FF_6CFA_0000_0000
        let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE
        switch byte {
        case 0..<64: return (low >> UInt64(byte)) & 1 == 1
        case 64..<128: return (high >> UInt64(byte - 64)) & 1 == 1
        default: return false
        }
    }

    /// A byte of a request target: visible ASCII or obs-text (no whitespace, no control characters).
    @inline(__always)
    static func isTargetChar(_ byte: UInt8) -> Bool { byte > 0x20 && byte != 0x7F }

    /// field-vchar, SP or HTAB: anything but control characters (NUL, CR, LF included) and DEL.
    @inline(__always)
    static func isFieldValueChar(_ byte: UInt8) -> Bool { byte >= 0x20 ? byte != 0x7F : byte == tab }

    @inline(__always)
    static func isDigit(_ byte: UInt8) -> Bool { byte &- zero < 10 }

    /// The value of a hex digit, or nil.
    @inline(__always)
    static func hexValue(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte &- zero)
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(byte &- UInt8(ascii: "a") &+ 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt64(byte &- UInt8(ascii: "A") &+ 10)
        default: nil
        }
    }

    /// Byte-for-byte equality with an ASCII literal.
    @inline(__always)
    static func equals(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let expected = literal.utf8Start
        for index in 0..<bytes.count where bytes[index] != expected[index] { return false }
        return true
    }

    /// Case-insensitive equality with a lowercase literal of letters, digits and '-'. Setting bit 5 lowercases
    /// a letter; the only other bytes it maps onto those characters are control characters, which the parser
    /// has already refused in names and values.
    @inline(__always)
    static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let expected = literal.utf8Start
        for index in 0..<bytes.count where bytes[index] | 0x20 != expected[index] { return false }
        return true
    }

    /// Equality ignoring the case of ASCII letters.
    static func equalsIgnoringCase(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        for index in 0..<a.count where lowercased(a[index]) != lowercased(b[index]) { return false }
        return true
    }

    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
    }

    /// Calls `body` with each element of a comma-separated list (RFC 9110 section 5.6.1) in `range`, without
    /// surrounding whitespace; empty elements are skipped, as the list rule allows.
    @inline(__always)
    static func forEachListElement<Failure: Error>(
        _ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ body: (Range<Int>) throws(Failure) -> Void
    ) throws(Failure) {
        var index = range.lowerBound
        while index < range.upperBound {
            var end = index
            while end < range.upperBound, bytes[end] != comma { end += 1 }
            var first = index
            var last = end
            while first < last, bytes[first] == space || bytes[first] == tab { first += 1 }
            while last > first, bytes[last - 1] == space || bytes[last - 1] == tab { last -= 1 }
            if first < last { try body(first..<last) }
            index = end + 1
        }
    }
}

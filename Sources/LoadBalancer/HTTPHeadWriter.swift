import NIOCore

/// Writes the heads the balancer forwards, anew from a parsed head (so whatever line endings came in, CRLF goes
/// out): fields about the connection (RFC 9110 section 7.6.1: Connection, the fields it names, Keep-Alive,
/// Proxy-Connection, TE, Trailer, Upgrade, Proxy-Authorization) stay behind, the others keep their order,
/// names and values.
enum HTTPHeadWriter {
    /// What the balancer says about the client connection in a response.
    enum ConnectionField { case none, close, keepAlive }

    /// The request for a backend: the client's method and target as HTTP/1.1 (the upstream connection is kept
    /// alive), its fields, then `X-Forwarded-For` (the values the client sent, then its address) and
    /// `X-Forwarded-Proto: http` in place of any the client sent.
    static func writeRequest(_ parsed: HTTPHeadParser, _ head: HTTP1RequestHead, _ bytes: UnsafeRawBufferPointer,
                             clientAddress: [UInt8], into out: inout ByteBuffer) {
        // Every field counted twice covers X-Forwarded-For's values written again at the end.
        let bound = parsed.methodRange.count + parsed.targetRange.count + 2 * fieldBytes(parsed) + clientAddress.count + 96
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { buffer in
            var out = ByteCursor(buffer)
            out.put(bytes, parsed.methodRange)
            out.put(ASCII.space)
            out.put(bytes, parsed.targetRange)
            out.put(" HTTP/1.1\r\n")
            var forwardedFor = 0
            for field in parsed.fields where forwards(field, parsed, bytes, connectionNamesFields: head.connectionNamesFields) {
                switch field.name {
                case .xForwardedFor: forwardedFor += 1
                case .xForwardedProto: continue
                default: out.putField(field, bytes)
                }
            }
            // HTTP/1.0 may omit Host; HTTP/1.1 needs one, empty when the target names no authority (RFC 9112 3.2).
            if !head.hasHost { out.put("Host: \r\n") }
            out.put("X-Forwarded-For: ")
            if forwardedFor > 0 {
                for field in parsed.fields where field.name == .xForwardedFor && field.valueStart < field.valueEnd
                    && forwards(field, parsed, bytes, connectionNamesFields: head.connectionNamesFields) {
                    out.put(bytes, field.valueStart..<field.valueEnd)
                    out.put(", ")
                }
            }
            clientAddress.withUnsafeBytes { out.put($0, 0..<$0.count) }
            out.put("\r\nX-Forwarded-Proto: http\r\n\r\n")
            return out.count
        }
    }

    /// A backend's response head for the client, as HTTP/1.1 with the backend's status and reason. Content-Length
    /// stays behind when Transfer-Encoding came too (RFC 9112 section 6.3), and Transfer-Encoding when the
    /// balancer decodes the chunks itself (for an HTTP/1.0 client).
    static func writeResponse(_ parsed: HTTPHeadParser, _ head: HTTP1ResponseHead, _ bytes: UnsafeRawBufferPointer,
                              connection: ConnectionField, dropTransferEncoding: Bool, into out: inout ByteBuffer) {
        let bound = parsed.reasonRange.count + fieldBytes(parsed) + 64
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { buffer in
            var out = ByteCursor(buffer)
            out.put("HTTP/1.1 ")
            out.put(ASCII.zero + UInt8(head.status / 100))
            out.put(ASCII.zero + UInt8(head.status / 10 % 10))
            out.put(ASCII.zero + UInt8(head.status % 10))
            out.put(ASCII.space)
            out.put(bytes, parsed.reasonRange)
            out.put("\r\n")
            for field in parsed.fields where forwards(field, parsed, bytes, connectionNamesFields: head.connectionNamesFields) {
                if field.name == .contentLength && head.dropsContentLength { continue }
                if field.name == .transferEncoding && dropTransferEncoding { continue }
                out.putField(field, bytes)
            }
            switch connection {
            case .none: break
            case .close: out.put("Connection: close\r\n")
            case .keepAlive: out.put("Connection: keep-alive\r\n")
            }
            out.put("\r\n")
            return out.count
        }
    }

    /// What the field lines take at most when written again.
    private static func fieldBytes(_ parsed: HTTPHeadParser) -> Int {
        var total = 0
        for field in parsed.fields { total += field.nameEnd - field.nameStart + field.valueEnd - field.valueStart + 4 }
        return total
    }

    /// Whether a field goes on: not about the connection, and not named by Connection (the framing fields and
    /// Host always go on: dropping them on a client's say-so would change how the backend reads the message).
    @inline(__always)
    private static func forwards(_ field: HTTPHeadParser.Field, _ parsed: HTTPHeadParser, _ bytes: UnsafeRawBufferPointer,
                                 connectionNamesFields: Bool) -> Bool {
        if field.name.isHopByHop { return false }
        guard connectionNamesFields else { return true }
        switch field.name {
        case .contentLength, .transferEncoding, .host: return true
        default: break
        }
        let name = UnsafeRawBufferPointer(rebasing: bytes[field.nameStart..<field.nameEnd])
        var named = false
        for option in parsed.fields where option.name == .connection {
            ASCII.forEachListElement(bytes, option.valueStart..<option.valueEnd) { element in
                if ASCII.equalsIgnoringCase(name, UnsafeRawBufferPointer(rebasing: bytes[element])) { named = true }
            }
        }
        return !named
    }
}

/// Writes bytes one after the other into memory known to be large enough (the writer bounds the size first), so
/// a head costs one capacity check rather than one per piece.
struct ByteCursor {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private(set) var count = 0

    init(_ buffer: UnsafeMutableRawBufferPointer) {
        base = buffer.baseAddress!
        capacity = buffer.count
    }

    @inline(__always)
    mutating func put(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) {
        precondition(count + range.count <= capacity, "head larger than its bound")
        if range.isEmpty { return }
        (base + count).copyMemory(from: bytes.baseAddress! + range.lowerBound, byteCount: range.count)
        count += range.count
    }

    @inline(__always)
    mutating func put(_ literal: StaticString) {
        precondition(count + literal.utf8CodeUnitCount <= capacity, "head larger than its bound")
        (base + count).copyMemory(from: literal.utf8Start, byteCount: literal.utf8CodeUnitCount)
        count += literal.utf8CodeUnitCount
    }

    @inline(__always)
    mutating func put(_ byte: UInt8) {
        precondition(count < capacity, "head larger than its bound")
        base.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    @inline(__always)
    mutating func putField(_ field: HTTPHeadParser.Field, _ bytes: UnsafeRawBufferPointer) {
        put(bytes, field.nameStart..<field.nameEnd)
        put(": ")
        put(bytes, field.valueStart..<field.valueEnd)
        put("\r\n")
    }
}

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
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[parsed.methodRange]))
        out.writeInteger(ASCII.space)
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[parsed.targetRange]))
        out.writeStaticString(" HTTP/1.1\r\n")
        var forwardedFor = 0
        for field in parsed.fields where forwards(field, parsed, bytes, connectionNamesFields: head.connectionNamesFields) {
            switch field.name {
            case .xForwardedFor: forwardedFor += 1
            case .xForwardedProto: continue
            default: writeField(field, bytes, into: &out)
            }
        }
        // HTTP/1.0 may omit Host; HTTP/1.1 needs one, empty when the target names no authority (RFC 9112 3.2).
        if !head.hasHost { out.writeStaticString("Host: \r\n") }
        out.writeStaticString("X-Forwarded-For: ")
        if forwardedFor > 0 {
            for field in parsed.fields where field.name == .xForwardedFor && field.valueStart < field.valueEnd
                && forwards(field, parsed, bytes, connectionNamesFields: head.connectionNamesFields) {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.valueStart..<field.valueEnd]))
                out.writeStaticString(", ")
            }
        }
        out.writeBytes(clientAddress)
        out.writeStaticString("\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    /// A backend's response head for the client, as HTTP/1.1 with the backend's status and reason. Content-Length
    /// stays behind when Transfer-Encoding came too (RFC 9112 section 6.3), and Transfer-Encoding when the
    /// balancer decodes the chunks itself (for an HTTP/1.0 client).
    static func writeResponse(_ parsed: HTTPHeadParser, _ head: HTTP1ResponseHead, _ bytes: UnsafeRawBufferPointer,
                              connection: ConnectionField, dropTransferEncoding: Bool, into out: inout ByteBuffer) {
        out.writeStaticString("HTTP/1.1 ")
        let status = UInt8(head.status / 100), tens = UInt8(head.status / 10 % 10), ones = UInt8(head.status % 10)
        out.writeInteger(ASCII.zero + status)
        out.writeInteger(ASCII.zero + tens)
        out.writeInteger(ASCII.zero + ones)
        out.writeInteger(ASCII.space)
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[parsed.reasonRange]))
        out.writeStaticString("\r\n")
        for field in parsed.fields where forwards(field, parsed, bytes, connectionNamesFields: head.connectionNamesFields) {
            if field.name == .contentLength && head.dropsContentLength { continue }
            if field.name == .transferEncoding && dropTransferEncoding { continue }
            writeField(field, bytes, into: &out)
        }
        switch connection {
        case .none: break
        case .close: out.writeStaticString("Connection: close\r\n")
        case .keepAlive: out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
    }

    @inline(__always)
    private static func writeField(_ field: HTTPHeadParser.Field, _ bytes: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.nameStart..<field.nameEnd]))
        out.writeStaticString(": ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.valueStart..<field.valueEnd]))
        out.writeStaticString("\r\n")
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

/// What the balancer needs to know of a parsed request head (RFC 9112 sections 6, 9.3; RFC 9110 section 10.1.1):
/// how its body is framed, whether the client keeps the connection, and whether the head is acceptable at all.
/// Refuses what a smuggling attack needs: Content-Length with Transfer-Encoding, a Content-Length that is not one
/// decimal number, a Transfer-Encoding that does not end with a single chunked, Transfer-Encoding in HTTP/1.0,
/// and an HTTP/1.1 request without exactly one Host.
struct HTTP1RequestHead {
    var method: HTTPMethod
    var isHTTP10: Bool
    /// The client keeps the connection open after this exchange.
    var keepAlive: Bool
    var framing: HTTPBodyFramer.Framing
    /// `Expect: 100-continue`: the client may wait for a 100 before it sends the body.
    var expectsContinue: Bool
    var hasHost: Bool
    /// Connection names fields other than close and keep-alive, which must then not be forwarded.
    var connectionNamesFields: Bool

    init(_ parsed: HTTPHeadParser, _ bytes: UnsafeRawBufferPointer) throws(HTTPFramingError) {
        method = parsed.method
        isHTTP10 = parsed.isHTTP10
        if method == .connect { throw .connectNotSupported }
        var fields = FramingFields()
        var hosts = 0
        var expectsContinue = false
        for field in parsed.fields where try !fields.add(field, bytes) {
            switch field.name {
            case .host: hosts += 1
            case .expect:
                try ASCII.forEachListElement(bytes, field.valueStart..<field.valueEnd) { element throws(HTTPFramingError) in
                    guard ASCII.equalsLowercased(UnsafeRawBufferPointer(rebasing: bytes[element]), "100-continue")
                    else { throw .unsupportedExpectation }
                    expectsContinue = true
                }
            default: break
            }
        }
        let (contentLength, transferEncoding, connection) = (fields.contentLength, fields.transferEncoding, fields.connection)
        if transferEncoding.present {
            if contentLength != nil { throw .contentLengthWithTransferEncoding }
            if isHTTP10 { throw .transferEncodingInHTTP10 }
            guard transferEncoding.endsWithChunked else { throw .badTransferEncoding }
            framing = .chunked
        } else if let contentLength {
            framing = .length(contentLength)
        } else {
            framing = .none
        }
        if !isHTTP10 && hosts != 1 || hosts > 1 { throw .missingOrRepeatedHost }
        hasHost = hosts == 1
        // An HTTP/1.0 client expects nothing from a 100 (RFC 9110 section 10.1.1).
        self.expectsContinue = expectsContinue && !isHTTP10
        keepAlive = isHTTP10 ? connection.keepAlive && !connection.close : !connection.close
        connectionNamesFields = connection.namesFields
    }
}

/// What the balancer needs to know of a backend's response head (RFC 9112 section 6.3): its framing and whether
/// the connection can carry another request.
struct HTTP1ResponseHead {
    var status: Int
    /// 1xx: another head follows.
    var isInformational: Bool { status < 200 }
    /// The backend keeps the connection open after this response.
    var keepAlive: Bool
    var framing: HTTPBodyFramer.Framing
    /// Both Transfer-Encoding and Content-Length came: the length is ignored and not forwarded (section 6.3).
    var dropsContentLength: Bool
    var connectionNamesFields: Bool

    init(_ parsed: HTTPHeadParser, _ bytes: UnsafeRawBufferPointer, requestMethod: HTTPMethod) throws(HTTPFramingError) {
        status = parsed.status
        if status == 101 { throw .unexpectedSwitchingProtocols }
        var fields = FramingFields()
        for field in parsed.fields { _ = try fields.add(field, bytes) }
        let (contentLength, transferEncoding, connection) = (fields.contentLength, fields.transferEncoding, fields.connection)
        dropsContentLength = transferEncoding.present && contentLength != nil
        if status < 200 || status == 204 || status == 304 || requestMethod == .head {
            framing = .none
        } else if transferEncoding.present {
            // A coding other than chunked last: only the end of the connection ends the body.
            framing = transferEncoding.endsWithChunked ? .chunked : .untilClose
        } else if let contentLength {
            framing = .length(contentLength)
        } else {
            framing = .untilClose
        }
        keepAlive = (parsed.isHTTP10 ? connection.keepAlive && !connection.close : !connection.close)
            && framing != .untilClose
        connectionNamesFields = connection.namesFields
    }
}

/// The fields that frame a message and say what becomes of its connection, gathered from a head.
struct FramingFields {
    var contentLength: UInt64?
    var transferEncoding = TransferEncoding()
    var connection = ConnectionOptions()

    /// Takes in `field` if it is one of these; false if it is another.
    mutating func add(_ field: HTTPHeadParser.Field, _ bytes: UnsafeRawBufferPointer) throws(HTTPFramingError) -> Bool {
        let value = field.valueStart..<field.valueEnd
        switch field.name {
        case .contentLength: try ContentLength.merge(bytes, value, into: &contentLength)
        case .transferEncoding: try transferEncoding.add(bytes, value)
        case .connection: connection.add(bytes, value)
        default: return false
        }
        return true
    }
}

/// Content-Length (RFC 9110 section 8.6): one decimal number; repeats (as fields or as a list) must agree.
enum ContentLength {
    /// Content-Length values above this (about 9.2 EB) are refused rather than overflowing.
    static let maximum = UInt64(Int64.max)

    static func merge(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, into length: inout UInt64?)
        throws(HTTPFramingError) {
        var sawElement = false
        try ASCII.forEachListElement(bytes, range) { element throws(HTTPFramingError) in
            sawElement = true
            var value: UInt64 = 0
            for index in element {
                let byte = bytes[index]
                guard ASCII.isDigit(byte) else { throw .badContentLength }
                let (times10, overflow) = value.multipliedReportingOverflow(by: 10)
                guard !overflow, times10 <= maximum - UInt64(byte &- ASCII.zero) else { throw .badContentLength }
                value = times10 + UInt64(byte &- ASCII.zero)
            }
            if let length, length != value { throw .conflictingContentLength }
            length = value
        }
        if !sawElement { throw .badContentLength }
    }
}

/// The codings of Transfer-Encoding fields, as far as framing goes: whether chunked comes last, and only once.
struct TransferEncoding {
    private(set) var present = false
    private var chunkedCount = 0
    private var lastIsChunked = false

    var endsWithChunked: Bool { lastIsChunked && chunkedCount == 1 }

    mutating func add(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) throws(HTTPFramingError) {
        present = true
        var sawElement = false
        try ASCII.forEachListElement(bytes, range) { element throws(HTTPFramingError) in
            sawElement = true
            // A coding is a token, maybe with parameters (`gzip;q=1` is not valid here, but `x;y=z` is).
            var end = element.lowerBound
            while end < element.upperBound, ASCII.isTokenChar(bytes[end]) { end += 1 }
            guard end > element.lowerBound else { throw .badTransferEncoding }
            if end < element.upperBound {
                let next = bytes[end]
                guard next == ASCII.semicolon || next == ASCII.space || next == ASCII.tab else { throw .badTransferEncoding }
            }
            let isChunked = ASCII.equalsLowercased(UnsafeRawBufferPointer(rebasing: bytes[element.lowerBound..<end]), "chunked")
            if isChunked {
                chunkedCount += 1
                // chunked takes no parameters.
                if end != element.upperBound { throw .badTransferEncoding }
            }
            lastIsChunked = isChunked
        }
        if !sawElement { throw .badTransferEncoding }
    }
}

/// The options of Connection fields (RFC 9110 section 7.6.1).
struct ConnectionOptions {
    private(set) var close = false
    private(set) var keepAlive = false
    /// It names another field (to be removed by whoever forwards the message).
    private(set) var namesFields = false

    mutating func add(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) {
        ASCII.forEachListElement(bytes, range) { element in
            let option = UnsafeRawBufferPointer(rebasing: bytes[element])
            if ASCII.equalsLowercased(option, "close") {
                close = true
            } else if ASCII.equalsLowercased(option, "keep-alive") {
                keepAlive = true
            } else {
                namesFields = true
            }
        }
    }
}

/// Why the balancer refused an HTTP/1.1 message it was parsing (RFC 9112). A request gets `status` with
/// `message` and its connection closes; a backend's response that fails like this becomes a 502.
enum HTTPFramingError: Error, Equatable, Sendable {
    case headTooLarge
    case tooManyFields
    case badRequestLine
    case badStatusLine
    case unsupportedVersion
    case badFieldName
    case obsoleteLineFolding
    case badFieldValue
    case bareCarriageReturn
    case missingOrRepeatedHost
    case badContentLength
    case conflictingContentLength
    case contentLengthWithTransferEncoding
    case badTransferEncoding
    case transferEncodingInHTTP10
    case unsupportedExpectation
    case connectNotSupported
    case unexpectedSwitchingProtocols
    case badChunkSize
    case badChunkLine
    case chunkLineTooLong
    case missingChunkTerminator
    case badTrailer
    case trailersTooLarge

    /// The status a client gets for a request that failed this way.
    var status: Int {
        switch self {
        case .headTooLarge, .tooManyFields: 431
        case .unsupportedVersion: 505
        case .unsupportedExpectation: 417
        case .connectNotSupported: 501
        default: 400
        }
    }

    /// What was wrong, for the body of the answer (and for a 502 when a backend sent it).
    var message: String {
        switch self {
        case .headTooLarge: "the message head is larger than 64 KiB"
        case .tooManyFields: "the message head has more than 256 header fields"
        case .badRequestLine: "the request line is not METHOD SP TARGET SP HTTP/1.x"
        case .badStatusLine: "the status line is not HTTP/1.x SP CODE SP REASON"
        case .unsupportedVersion: "only HTTP/1.0 and HTTP/1.1 are spoken here"
        case .badFieldName: "a header field name is empty, has a character not allowed in a token, or whitespace before its colon"
        case .obsoleteLineFolding: "a header field continues on the next line (obsolete line folding is refused)"
        case .badFieldValue: "a header field value contains a control character"
        case .bareCarriageReturn: "a line contains a CR that is not followed by LF"
        case .missingOrRepeatedHost: "an HTTP/1.1 request needs exactly one Host header field"
        case .badContentLength: "Content-Length is not a decimal number"
        case .conflictingContentLength: "Content-Length is given more than once with different values"
        case .contentLengthWithTransferEncoding: "both Content-Length and Transfer-Encoding are given"
        case .badTransferEncoding: "Transfer-Encoding must end with chunked, and name it once"
        case .transferEncodingInHTTP10: "an HTTP/1.0 request cannot use Transfer-Encoding"
        case .unsupportedExpectation: "the only expectation understood is 100-continue"
        case .connectNotSupported: "CONNECT is not supported by this balancer"
        case .unexpectedSwitchingProtocols: "the backend switched protocols though no upgrade was asked for"
        case .badChunkSize: "a chunk size is not hexadecimal or too large"
        case .badChunkLine: "a chunk size line is malformed (whitespace, extension, or a line ending other than CRLF)"
        case .chunkLineTooLong: "a chunk size line is longer than 4 KiB"
        case .missingChunkTerminator: "chunk data is not followed by CRLF"
        case .badTrailer: "a trailer field is malformed"
        case .trailersTooLarge: "the trailer section is larger than 64 KiB"
        }
    }
}

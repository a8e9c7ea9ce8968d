/// Follows an HTTP/1.1 message body's framing (RFC 9112 sections 6 and 7) over the bytes as they arrive, to find
/// where the body ends, without buffering or decoding it: the balancer forwards the body's bytes as they came.
/// A Content-Length body is counted down; a chunked body goes through a state machine that checks every size
/// line, chunk terminator and trailer field (the next message starts right after the last CRLF). Since these
/// bytes reach the backend as they are, the chunked syntax is checked strictly: every line ends with CRLF (a bare
/// LF could end a line for one parser and not for the next), a chunk extension holds no control characters, and
/// a size line is at most 4 KiB. Nothing is ever allocated from a length the peer claims.
struct HTTPBodyFramer {
    enum Framing: Equatable {
        /// No body.
        case none
        /// Exactly this many bytes.
        case length(UInt64)
        /// Chunked transfer coding.
        case chunked
        /// Everything until the connection closes (a response without a length).
        case untilClose
    }

    /// A run of bytes from the start of the input: chunk data (`isPayload`) or framing (size lines, CRLFs,
    /// trailers). Content-Length and until-close bodies are payload only.
    struct Span: Equatable {
        var count: Int
        var isPayload: Bool
    }

    static let maxChunkLineBytes = 4 * 1024
    static let maxTrailerBytes = 64 * 1024

    private enum State: Equatable {
        case length(remaining: UInt64)
        case untilClose
        case chunkSize(value: UInt64, digits: Int)
        /// Whitespace after the size: a `;` and an extension must follow.
        case chunkSizeWhitespace(value: UInt64)
        case chunkExtension(value: UInt64)
        case chunkSizeLF(value: UInt64)
        case chunkData(remaining: UInt64)
        case chunkDataCR
        case chunkDataLF
        case trailerLineStart
        case trailerName
        case trailerValue
        case trailerLF
        case finalLF
        case done
    }

    private var state: State
    /// Bytes of the current chunk size line, or of the whole trailer section, against their limits.
    private var lineBytes = 0

    init(_ framing: Framing) {
        switch framing {
        case .none, .length(0): state = .done
        case .length(let count): state = .length(remaining: count)
        case .chunked: state = .chunkSize(value: 0, digits: 0)
        case .untilClose: state = .untilClose
        }
    }

    /// The body's last byte has gone by.
    var isDone: Bool { state == .done }

    /// Only the connection's end ends this body.
    var endsAtClose: Bool { state == .untilClose }

    /// How many of `bytes` (from the start) belong to the body; `isDone` tells whether the body ended there.
    mutating func consume(_ bytes: UnsafeRawBufferPointer) throws(HTTPFramingError) -> Int {
        switch state {
        case .length(let remaining):
            let count = Int(min(remaining, UInt64(bytes.count)))
            state = remaining == UInt64(count) ? .done : .length(remaining: remaining - UInt64(count))
            return count
        case .untilClose:
            return bytes.count
        case .done:
            return 0
        default:
            var consumed = 0
            while consumed < bytes.count, state != .done {
                consumed += try next(UnsafeRawBufferPointer(rebasing: bytes[consumed...])).count
            }
            return consumed
        }
    }

    /// The next span of `bytes` (not empty unless `bytes` is, or the body has ended).
    mutating func next(_ bytes: UnsafeRawBufferPointer) throws(HTTPFramingError) -> Span {
        guard !bytes.isEmpty else { return Span(count: 0, isPayload: false) }
        switch state {
        case .length(let remaining):
            let count = Int(min(remaining, UInt64(bytes.count)))
            state = remaining == UInt64(count) ? .done : .length(remaining: remaining - UInt64(count))
            return Span(count: count, isPayload: true)
        case .untilClose:
            return Span(count: bytes.count, isPayload: true)
        case .done:
            return Span(count: 0, isPayload: false)
        case .chunkData(let remaining):
            let count = Int(min(remaining, UInt64(bytes.count)))
            state = remaining == UInt64(count) ? .chunkDataCR : .chunkData(remaining: remaining - UInt64(count))
            return Span(count: count, isPayload: true)
        default:
            var index = 0
            while index < bytes.count {
                try step(bytes[index])
                index += 1
                switch state {
                case .chunkData, .done: return Span(count: index, isPayload: false)
                default: continue
                }
            }
            return Span(count: index, isPayload: false)
        }
    }

    /// One byte of chunked framing (RFC 9112 section 7.1).
    private mutating func step(_ byte: UInt8) throws(HTTPFramingError) {
        switch state {
        case .chunkSize(let value, let digits):
            try countLineByte()
            if let digit = ASCII.hexValue(byte) {
                guard value <= ContentLength.maximum >> 4 else { throw .badChunkSize }
                state = .chunkSize(value: value << 4 | digit, digits: digits + 1)
                return
            }
            guard digits > 0 else { throw .badChunkSize }
            switch byte {
            case ASCII.cr: state = .chunkSizeLF(value: value)
            case ASCII.semicolon: state = .chunkExtension(value: value)
            case ASCII.space, ASCII.tab: state = .chunkSizeWhitespace(value: value)
            case ASCII.lf: throw .badChunkLine
            default: throw .badChunkSize
            }
        case .chunkSizeWhitespace(let value):
            try countLineByte()
            switch byte {
            case ASCII.space, ASCII.tab: break
            case ASCII.semicolon: state = .chunkExtension(value: value)
            default: throw .badChunkLine
            }
        case .chunkExtension(let value):
            try countLineByte()
            if byte == ASCII.cr {
                state = .chunkSizeLF(value: value)
            } else if !ASCII.isFieldValueChar(byte) {
                throw .badChunkLine
            }
        case .chunkSizeLF(let value):
            guard byte == ASCII.lf else { throw .badChunkLine }
            lineBytes = 0
            state = value == 0 ? .trailerLineStart : .chunkData(remaining: value)
        case .chunkDataCR:
            guard byte == ASCII.cr else { throw .missingChunkTerminator }
            state = .chunkDataLF
        case .chunkDataLF:
            guard byte == ASCII.lf else { throw .missingChunkTerminator }
            state = .chunkSize(value: 0, digits: 0)
        case .trailerLineStart:
            try countTrailerByte()
            if byte == ASCII.cr {
                state = .finalLF
            } else if ASCII.isTokenChar(byte) {
                state = .trailerName
            } else {
                throw .badTrailer  // includes obs-fold (a line starting with whitespace)
            }
        case .trailerName:
            try countTrailerByte()
            if byte == ASCII.colon {
                state = .trailerValue
            } else if !ASCII.isTokenChar(byte) {
                throw .badTrailer
            }
        case .trailerValue:
            try countTrailerByte()
            if byte == ASCII.cr {
                state = .trailerLF
            } else if !ASCII.isFieldValueChar(byte) {
                throw .badTrailer
            }
        case .trailerLF:
            guard byte == ASCII.lf else { throw .badTrailer }
            state = .trailerLineStart
        case .finalLF:
            guard byte == ASCII.lf else { throw .badTrailer }
            state = .done
        case .length, .untilClose, .chunkData, .done:
            preconditionFailure("step(_:) is only for chunked framing bytes")
        }
    }

    private mutating func countLineByte() throws(HTTPFramingError) {
        lineBytes += 1
        if lineBytes > Self.maxChunkLineBytes { throw .chunkLineTooLong }
    }

    private mutating func countTrailerByte() throws(HTTPFramingError) {
        lineBytes += 1
        if lineBytes > Self.maxTrailerBytes { throw .trailersTooLarge }
    }
}

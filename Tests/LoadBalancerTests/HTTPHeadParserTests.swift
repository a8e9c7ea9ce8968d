@testable import LoadBalancer
import NIOCore
import Testing

/// Parsing and rewriting HTTP/1.1 heads (RFC 9112): what the balancer accepts, what it refuses, and what it
/// forwards.
@Suite struct HTTPHeadParserTests {
    /// Parses `text` in one piece: the parser and the head's length (nil while incomplete).
    static func parse(_ text: String, _ kind: HTTPHeadParser.Kind = .request) throws(HTTPFramingError) -> (HTTPHeadParser, Int?) {
        var parser = HTTPHeadParser(kind: kind)
        let length = try withBytes(text) { bytes throws(HTTPFramingError) in try parser.parse(bytes) }
        return (parser, length)
    }

    static func request(_ text: String) throws(HTTPFramingError) -> HTTP1RequestHead {
        let (parser, length) = try parse(text)
        guard length != nil else { throw .badRequestLine }
        return try withBytes(text) { bytes throws(HTTPFramingError) in try HTTP1RequestHead(parser, bytes) }
    }

    static func response(_ text: String, to method: HTTPMethod = .get) throws(HTTPFramingError) -> HTTP1ResponseHead {
        let (parser, length) = try parse(text, .response)
        guard length != nil else { throw .badStatusLine }
        return try withBytes(text) { bytes throws(HTTPFramingError) in try HTTP1ResponseHead(parser, bytes, requestMethod: method) }
    }

    /// The head the balancer sends a backend for `text`, from client 10.1.2.3.
    static func forwarded(_ text: String) throws(HTTPFramingError) -> String {
        let (parser, _) = try parse(text)
        return try withBytes(text) { bytes throws(HTTPFramingError) in
            let head = try HTTP1RequestHead(parser, bytes)
            var out = ByteBuffer()
            HTTPHeadWriter.writeRequest(parser, head, bytes, clientAddress: Array("10.1.2.3".utf8), into: &out)
            return String(buffer: out)
        }
    }

    /// The head the balancer sends its client for a backend's `text`.
    static func relayed(_ text: String, connection: HTTPHeadWriter.ConnectionField = .none, dechunk: Bool = false)
        throws(HTTPFramingError) -> String {
        let (parser, _) = try parse(text, .response)
        return try withBytes(text) { bytes throws(HTTPFramingError) in
            let head = try HTTP1ResponseHead(parser, bytes, requestMethod: .get)
            var out = ByteBuffer()
            HTTPHeadWriter.writeResponse(parser, head, bytes, connection: connection, dropTransferEncoding: dechunk, into: &out)
            return String(buffer: out)
        }
    }

    static func withBytes<Result>(_ text: String, _ body: (UnsafeRawBufferPointer) throws(HTTPFramingError) -> Result)
        throws(HTTPFramingError) -> Result {
        let bytes = Array(text.utf8)
        let result: Swift.Result<Result, HTTPFramingError> = bytes.withUnsafeBytes { buffer in
            do throws(HTTPFramingError) { return .success(try body(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    // MARK: - Accepted heads

    @Test func aSimpleGetParsesIntoMethodTargetVersionAndFields() throws {
        let text = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\n\r\n"
        let (parser, length) = try Self.parse(text + "NEXT")
        #expect(length == text.utf8.count)
        #expect(parser.method == .get)
        #expect(!parser.isHTTP10)
        let bytes = Array(text.utf8)
        #expect(String(decoding: bytes[parser.targetRange], as: UTF8.self) == "/a/b?c=d")
        #expect(parser.fields.map(\.name) == [.host, .other])
        let accept = parser.fields[1]
        #expect(String(decoding: bytes[accept.valueStart..<accept.valueEnd], as: UTF8.self) == "*/*")
        let head = try Self.request(text)
        #expect(head.framing == .none)
        #expect(head.keepAlive)
        #expect(head.hasHost)
    }

    @Test func anIncompleteHeadAsksForMore() throws {
        #expect(try Self.parse("GET / HTTP/1.1\r\nHost: a\r\n").1 == nil)
        #expect(try Self.parse("GET / HTTP/1.1\r\nHost: a\r\n\r").1 == nil)
        #expect(try Self.parse("").1 == nil)
    }

    @Test func aHeadSplitAtEveryByteGivesTheSameHeadAsInOnePiece() throws {
        let text = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Long-Name: some value\r\n\r\nhello"
        let bytes = Array(text.utf8)
        let (whole, wholeLength) = try Self.parse(text)
        let headLength = try #require(wholeLength)
        // Grown one byte at a time through the same parser (it resumes where it stopped)...
        var growing = HTTPHeadParser(kind: .request)
        var found: Int?
        for end in 0...bytes.count where found == nil {
            found = try bytes[0..<end].withUnsafeBytes { try growing.parse($0) }
            if end < headLength { #expect(found == nil) }
        }
        #expect(found == headLength)
        #expect(growing.fields.map(\.valueStart) == whole.fields.map(\.valueStart))
        // ...and in two pieces split at every position.
        for split in 0...bytes.count {
            var parser = HTTPHeadParser(kind: .request)
            let first = try bytes[0..<split].withUnsafeBytes { try parser.parse($0) }
            let second = try bytes.withUnsafeBytes { try parser.parse($0) }
            #expect((first ?? second) == headLength)
            #expect(parser.fields.map(\.name) == whole.fields.map(\.name))
        }
    }

    @Test func bareLineFeedsEndLinesAndTheForwardedHeadUsesCRLF() throws {
        let forwarded = try Self.forwarded("GET / HTTP/1.1\nHost: h\nX-A: 1\n\n")
        #expect(forwarded == "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    @Test func emptyLinesBeforeTheRequestLineAreIgnored() throws {
        let text = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
        let (parser, length) = try Self.parse(text)
        #expect(length == text.utf8.count)
        #expect(parser.method == .get)
    }

    @Test func repeatedEqualContentLengthsAreOneLength() throws {
        #expect(try Self.request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").framing == .length(5))
        #expect(try Self.request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\n\r\n").framing == .length(7))
    }

    @Test func transferEncodingEndingWithChunkedIsChunkedAcrossFieldLines() throws {
        #expect(try Self.request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").framing == .chunked)
        #expect(try Self.request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n").framing == .chunked)
        #expect(try Self.request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n").framing == .chunked)
    }

    @Test func keepAliveFollowsTheVersionAndTheConnectionField() throws {
        #expect(try Self.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keepAlive)
        #expect(try !Self.request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keepAlive)
        #expect(try !Self.request("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n").keepAlive)
        #expect(try !Self.request("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(try Self.request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive)
        #expect(try Self.request("GET / HTTP/1.2\r\nHost: h\r\n\r\n").keepAlive)
    }

    @Test func methodsAreRecognisedCaseSensitivelyAndOnlySafeOnesAreReplayable() throws {
        let cases: [(String, HTTPMethod, Bool)] = [
            ("GET", .get, true), ("HEAD", .head, true), ("PUT", .put, true), ("DELETE", .delete, true),
            ("OPTIONS", .options, true), ("TRACE", .trace, true), ("POST", .post, false), ("PATCH", .other, false),
            ("get", .other, false),
        ]
        for (name, method, idempotent) in cases {
            let head = try Self.request("\(name) / HTTP/1.1\r\nHost: h\r\n\r\n")
            #expect(head.method == method, "\(name)")
            #expect(head.method.isIdempotent == idempotent, "\(name)")
        }
    }

    @Test func expectContinueIsNotedForHTTP11Only() throws {
        #expect(try Self.request("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expectsContinue)
        #expect(try !Self.request("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expectsContinue)
    }

    // MARK: - Refused heads

    static let refusals: [FramingRefusal] = [
        FramingRefusal(why: "Content-Length with Transfer-Encoding (CL.TE / TE.CL smuggling)",
                text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                error: .contentLengthWithTransferEncoding),
        FramingRefusal(why: "Transfer-Encoding before Content-Length",
                text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                error: .contentLengthWithTransferEncoding),
        FramingRefusal(why: "two different Content-Lengths",
                text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", error: .conflictingContentLength),
        FramingRefusal(why: "a Content-Length list that disagrees",
                text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", error: .conflictingContentLength),
        FramingRefusal(why: "a signed Content-Length", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", error: .badContentLength),
        FramingRefusal(why: "a negative Content-Length", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", error: .badContentLength),
        FramingRefusal(why: "a hexadecimal Content-Length", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", error: .badContentLength),
        FramingRefusal(why: "Content-Length with a space inside", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n", error: .badContentLength),
        FramingRefusal(why: "an empty Content-Length", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", error: .badContentLength),
        FramingRefusal(why: "a Content-Length beyond 2^63", text: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
                error: .badContentLength),
        FramingRefusal(why: "Transfer-Encoding not ending with chunked",
                text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", error: .badTransferEncoding),
        FramingRefusal(why: "Transfer-Encoding without chunked", text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
                error: .badTransferEncoding),
        FramingRefusal(why: "chunked twice", text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                error: .badTransferEncoding),
        FramingRefusal(why: "chunked with a parameter", text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
                error: .badTransferEncoding),
        FramingRefusal(why: "a Transfer-Encoding that is not a token",
                text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", error: .badTransferEncoding),
        FramingRefusal(why: "an empty Transfer-Encoding", text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n", error: .badTransferEncoding),
        FramingRefusal(why: "Transfer-Encoding in HTTP/1.0", text: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                error: .transferEncodingInHTTP10),
        FramingRefusal(why: "obsolete line folding", text: "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", error: .obsoleteLineFolding),
        FramingRefusal(why: "folding with a tab", text: "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n", error: .obsoleteLineFolding),
        FramingRefusal(why: "whitespace before the colon (Transfer-Encoding : chunked)",
                text: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", error: .badFieldName),
        FramingRefusal(why: "an empty field name", text: "GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n", error: .badFieldName),
        FramingRefusal(why: "a field line without a colon", text: "GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n", error: .badFieldName),
        FramingRefusal(why: "a bare CR inside a value", text: "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", error: .bareCarriageReturn),
        FramingRefusal(why: "a bare CR ending a line", text: "GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n", error: .bareCarriageReturn),
        FramingRefusal(why: "a CR CR LF line ending", text: "GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", error: .bareCarriageReturn),
        FramingRefusal(why: "a NUL in a value", text: "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u{0}b\r\n\r\n", error: .badFieldValue),
        FramingRefusal(why: "DEL in a value", text: "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u{7F}\r\n\r\n", error: .badFieldValue),
        FramingRefusal(why: "HTTP/1.1 without Host", text: "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", error: .missingOrRepeatedHost),
        FramingRefusal(why: "two Hosts", text: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", error: .missingOrRepeatedHost),
        FramingRefusal(why: "two Hosts in HTTP/1.0", text: "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", error: .missingOrRepeatedHost),
        FramingRefusal(why: "CONNECT", text: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", error: .connectNotSupported),
        FramingRefusal(why: "HTTP/2.0 in an HTTP/1 request line", text: "GET / HTTP/2.0\r\nHost: h\r\n\r\n", error: .unsupportedVersion),
        FramingRefusal(why: "two spaces after the method", text: "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", error: .badRequestLine),
        FramingRefusal(why: "an HTTP/0.9 request line", text: "GET /\r\nHost: h\r\n\r\n", error: .badRequestLine),
        FramingRefusal(why: "a space after the version", text: "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", error: .badRequestLine),
        FramingRefusal(why: "a lowercase version", text: "GET / http/1.1\r\nHost: h\r\n\r\n", error: .badRequestLine),
        FramingRefusal(why: "a tab in the target", text: "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", error: .badRequestLine),
        FramingRefusal(why: "a method that is not a token", text: "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", error: .badRequestLine),
        FramingRefusal(why: "an expectation other than 100-continue", text: "GET / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n",
                error: .unsupportedExpectation),
    ]

    @Test(arguments: refusals)
    func aMalformedOrAmbiguousRequestIsRefused(_ refusal: FramingRefusal) {
        #expect(throws: refusal.error) { _ = try Self.request(refusal.text) }
    }

    @Test func refusalsAnswerWithTheFittingStatus() {
        #expect(HTTPFramingError.contentLengthWithTransferEncoding.status == 400)
        #expect(HTTPFramingError.headTooLarge.status == 431)
        #expect(HTTPFramingError.tooManyFields.status == 431)
        #expect(HTTPFramingError.unsupportedExpectation.status == 417)
        #expect(HTTPFramingError.connectNotSupported.status == 501)
        #expect(HTTPFramingError.unsupportedVersion.status == 505)
    }

    @Test func aHeadOver64KiBIsRefusedWithoutWaitingForItsEnd() throws {
        let big = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + String(repeating: "a", count: 70_000)
        #expect(throws: HTTPFramingError.headTooLarge) { _ = try Self.parse(big) }
        let manyLines = "GET / HTTP/1.1\r\nHost: h\r\n" + String(repeating: "X-A: " + String(repeating: "b", count: 400) + "\r\n", count: 200)
        #expect(throws: HTTPFramingError.headTooLarge) { _ = try Self.parse(manyLines + "\r\n") }
        // Just under the limit is fine.
        let under = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + String(repeating: "a", count: 60_000) + "\r\n\r\n"
        #expect(try Self.parse(under).1 == under.utf8.count)
    }

    @Test func moreThan256FieldsAreRefused() throws {
        let fields = (0..<256).map { "X-\($0): v\r\n" }.joined()
        #expect(try Self.parse("GET / HTTP/1.1\r\n\(fields)\r\n").1 != nil)
        #expect(throws: HTTPFramingError.tooManyFields) { _ = try Self.parse("GET / HTTP/1.1\r\nHost: h\r\n\(fields)\r\n") }
    }

    // MARK: - The head forwarded to a backend

    @Test func connectionFieldsStayBehindAndForwardedForGrowsByTheClient() throws {
        let forwarded = try Self.forwarded(
            "GET /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
                + "Trailer: X-T\r\nUpgrade: websocket\r\nProxy-Connection: close\r\nProxy-Authorization: Basic eA==\r\n"
                + "X-Secret: s\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-Proto: https\r\n"
                + "Accept: */*\r\n\r\n")
        #expect(forwarded == "GET /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
            + "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    @Test func connectionCannotRemoveTheFramingFieldsOrHost() throws {
        let forwarded = try Self.forwarded(
            "POST / HTTP/1.1\r\nHost: h\r\nConnection: Content-Length, host\r\nContent-Length: 3\r\n\r\n")
        #expect(forwarded == "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    @Test func anHTTP10RequestGoesOnAsHTTP11WithAnEmptyHostWhenItHadNone() throws {
        #expect(try Self.forwarded("GET /old HTTP/1.0\r\nUser-Agent: a\r\n\r\n")
            == "GET /old HTTP/1.1\r\nUser-Agent: a\r\nHost: \r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n")
    }

    // MARK: - Response heads

    @Test func responseFramingFollowsRFC9112Section6_3() throws {
        #expect(try Self.response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").framing == .length(12))
        #expect(try Self.response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing == .chunked)
        #expect(try Self.response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").framing == .untilClose)
        #expect(try Self.response("HTTP/1.1 200 OK\r\n\r\n").framing == .untilClose)
        #expect(try Self.response("HTTP/1.1 204 No Content\r\n\r\n").framing == .none)
        #expect(try Self.response("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").framing == .none)
        #expect(try Self.response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", to: .head).framing == .none)
        #expect(try Self.response("HTTP/1.1 100 Continue\r\n\r\n").isInformational)
        let both = try Self.response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(both.framing == .chunked)
        #expect(both.dropsContentLength)
    }

    @Test func aResponseKeepsItsConnectionUnlessItSaysCloseOrHasNoLength() throws {
        #expect(try Self.response("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keepAlive)
        #expect(try !Self.response("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keepAlive)
        #expect(try !Self.response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keepAlive)
        #expect(try Self.response("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keepAlive)
        #expect(try !Self.response("HTTP/1.1 200 OK\r\n\r\n").keepAlive)
    }

    @Test func malformedResponsesAreRefused() {
        #expect(throws: HTTPFramingError.badStatusLine) { _ = try Self.response("HTTP/1.1 20 OK\r\n\r\n") }
        #expect(throws: HTTPFramingError.badStatusLine) { _ = try Self.response("HTTP/1.1 200OK\r\n\r\n") }
        #expect(throws: HTTPFramingError.badStatusLine) { _ = try Self.response("ICY 200 OK\r\n\r\n") }
        #expect(throws: HTTPFramingError.badContentLength) { _ = try Self.response("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n") }
        #expect(throws: HTTPFramingError.conflictingContentLength) {
            _ = try Self.response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        }
        #expect(throws: HTTPFramingError.unexpectedSwitchingProtocols) { _ = try Self.response("HTTP/1.1 101 Switching\r\n\r\n") }
    }

    @Test func aStatusLineMayLackItsReason() throws {
        #expect(try Self.response("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == 200)
        #expect(try Self.relayed("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n") == "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
    }

    @Test func theRelayedResponseDropsConnectionFieldsAndSaysWhatTheBalancerDoes() throws {
        let response = "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n"
        #expect(try Self.relayed(response) == "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\n\r\n")
        #expect(try Self.relayed(response, connection: .close)
            == "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        #expect(try Self.relayed("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", connection: .keepAlive)
            == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
    }

    @Test func aDecodedChunkedResponseLosesItsTransferEncodingAndAnIgnoredLengthIsDropped() throws {
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"
        #expect(try Self.relayed(response) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(try Self.relayed(response, connection: .close, dechunk: true) == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    }
}

/// Bytes the balancer must refuse, why, and with which error.
struct FramingRefusal: Sendable, CustomTestStringConvertible {
    var why: String
    var text: String
    var error: HTTPFramingError
    var testDescription: String { why }
}

@testable import LoadBalancer
import Testing

/// Finding where an HTTP/1.1 body ends (RFC 9112 sections 6 and 7) in bytes that arrive in any pieces.
@Suite struct HTTPBodyFramerTests {
    /// What the framer made of `pieces` fed one after the other: how many bytes were body, the chunk data among
    /// them, and whether the body ended.
    struct Outcome: Equatable {
        var consumed = 0
        var payload: [UInt8] = []
        var done = false
    }

    static func frame(_ framing: HTTPBodyFramer.Framing, _ pieces: [[UInt8]]) throws(HTTPFramingError) -> Outcome {
        var framer = HTTPBodyFramer(framing)
        var outcome = Outcome()
        for piece in pieces where !framer.isDone {
            var offset = 0
            while offset < piece.count, !framer.isDone {
                let span = try withPiece(piece[offset...]) { bytes throws(HTTPFramingError) in try framer.next(bytes) }
                if span.isPayload { outcome.payload += piece[offset..<(offset + span.count)] }
                offset += span.count
                if span.count == 0 { break }
            }
            outcome.consumed += offset
        }
        outcome.done = framer.isDone
        return outcome
    }

    /// The same with `consume` (the forwarding path: no payload spans, just the count).
    static func consume(_ framing: HTTPBodyFramer.Framing, _ pieces: [[UInt8]]) throws(HTTPFramingError) -> (Int, Bool) {
        var framer = HTTPBodyFramer(framing)
        var consumed = 0
        for piece in pieces where !framer.isDone {
            consumed += try withPiece(piece[...]) { bytes throws(HTTPFramingError) in try framer.consume(bytes) }
        }
        return (consumed, framer.isDone)
    }

    static func withPiece<Result>(_ piece: ArraySlice<UInt8>, _ body: (UnsafeRawBufferPointer) throws(HTTPFramingError) -> Result)
        throws(HTTPFramingError) -> Result {
        let result: Swift.Result<Result, HTTPFramingError> = piece.withUnsafeBytes { bytes in
            do throws(HTTPFramingError) { return .success(try body(bytes)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Every way of cutting `bytes` in two, and byte by byte.
    static func splits(_ bytes: [UInt8]) -> [[[UInt8]]] {
        (0...bytes.count).map { [Array(bytes[..<$0]), Array(bytes[$0...])] } + [bytes.map { [$0] }]
    }

    static let chunked = "5\r\nhello\r\n1A;name=value;q=\"x y\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0003\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\n"
    static let chunkedPayload = "helloabcdefghijklmnopqrstuvwxyzabc"

    // MARK: - Content-Length

    @Test func aContentLengthBodyEndsAfterItsLengthAndLeavesTheNextMessage() throws {
        let outcome = try Self.frame(.length(5), [Self.bytes("hel"), Self.bytes("loGET / HTTP/1.1")])
        #expect(outcome == Outcome(consumed: 5, payload: Self.bytes("hello"), done: true))
        #expect(try Self.consume(.length(5), [Self.bytes("hel"), Self.bytes("loGET")]) == (5, true))
        #expect(try Self.consume(.length(0), [Self.bytes("GET")]) == (0, true))
        #expect(try Self.consume(.none, [Self.bytes("GET")]) == (0, true))
    }

    @Test func aHugeDeclaredLengthIsOnlyCountedDown() throws {
        // Nothing is allocated from the claim: the framer takes what came and waits for the rest.
        let outcome = try Self.consume(.length(UInt64(Int64.max)), [Self.bytes("abc")])
        #expect(outcome == (3, false))
    }

    @Test func aBodyUntilCloseTakesEverythingAndNeverEnds() throws {
        #expect(try Self.consume(.untilClose, [Self.bytes("abc"), Self.bytes("def")]) == (6, false))
        let framer = HTTPBodyFramer(.untilClose)
        #expect(framer.endsAtClose)
        #expect(!framer.isDone)
    }

    // MARK: - Chunked

    @Test func aChunkedBodyWithExtensionsAndTrailersEndsAfterItsLastCRLF() throws {
        let body = Self.bytes(Self.chunked)
        let outcome = try Self.frame(.chunked, [body + Self.bytes("GET / HTTP/1.1\r\n")])
        #expect(outcome == Outcome(consumed: body.count, payload: Self.bytes(Self.chunkedPayload), done: true))
        #expect(try Self.consume(.chunked, [body + Self.bytes("NEXT")]) == (body.count, true))
    }

    @Test func aChunkedBodySplitAtEveryByteFramesTheSame() throws {
        let body = Self.bytes(Self.chunked) + Self.bytes("NEXT")
        let expected = Outcome(consumed: body.count - 4, payload: Self.bytes(Self.chunkedPayload), done: true)
        for pieces in Self.splits(body) {
            #expect(try Self.frame(.chunked, pieces) == expected)
            #expect(try Self.consume(.chunked, pieces) == (body.count - 4, true))
        }
    }

    @Test func anUnfinishedChunkedBodyWaitsForMore() throws {
        let outcome = try Self.frame(.chunked, [Self.bytes("5\r\nhel")])
        #expect(outcome == Outcome(consumed: 6, payload: Self.bytes("hel"), done: false))
        #expect(try Self.consume(.chunked, [Self.bytes("0\r\n\r")]) == (4, false))
    }

    @Test func anEmptyChunkedBodyIsTheLastChunkAlone() throws {
        #expect(try Self.frame(.chunked, [Self.bytes("0\r\n\r\n")]) == Outcome(consumed: 5, payload: [], done: true))
    }

    @Test func aHugeChunkSizeIsOnlyCountedDown() throws {
        let outcome = try Self.frame(.chunked, [Self.bytes("7fffffffffffffff\r\nabc")])
        #expect(outcome == Outcome(consumed: 21, payload: Self.bytes("abc"), done: false))
    }

    static let refusals: [FramingRefusal] = [
        FramingRefusal(why: "a bare LF after the size", text: "5\nhello\r\n0\r\n\r\n", error: .badChunkLine),
        FramingRefusal(why: "a bare LF after an extension", text: "5;a=b\nhello\r\n0\r\n\r\n", error: .badChunkLine),
        FramingRefusal(why: "CR without LF after the size", text: "5\rhello\r\n0\r\n\r\n", error: .badChunkLine),
        FramingRefusal(why: "no CRLF after the data", text: "5\r\nhelloX\r\n0\r\n\r\n", error: .missingChunkTerminator),
        FramingRefusal(why: "a bare LF after the data", text: "5\r\nhello\n0\r\n\r\n", error: .missingChunkTerminator),
        FramingRefusal(why: "CR then something other than LF after the data", text: "5\r\nhello\rX0\r\n\r\n", error: .missingChunkTerminator),
        FramingRefusal(why: "a size that is not hexadecimal", text: "g\r\n", error: .badChunkSize),
        FramingRefusal(why: "an empty size", text: "\r\nhello\r\n", error: .badChunkSize),
        FramingRefusal(why: "a 0x prefix", text: "0x5\r\nhello\r\n", error: .badChunkSize),
        FramingRefusal(why: "a signed size", text: "-5\r\nhello\r\n", error: .badChunkSize),
        FramingRefusal(why: "a size above 2^63", text: "fffffffffffffffff\r\n", error: .badChunkSize),
        FramingRefusal(why: "whitespace before the size", text: " 5\r\nhello\r\n", error: .badChunkSize),
        FramingRefusal(why: "whitespace after the size without an extension", text: "5 \r\nhello\r\n0\r\n\r\n", error: .badChunkLine),
        FramingRefusal(why: "a control character in an extension", text: "5;a=\u{1}\r\nhello\r\n0\r\n\r\n", error: .badChunkLine),
        FramingRefusal(why: "a NUL in an extension", text: "5;a\u{0}\r\nhello\r\n0\r\n\r\n", error: .badChunkLine),
        FramingRefusal(why: "a size line over 4 KiB", text: "5;" + String(repeating: "a", count: 5_000) + "\r\n", error: .chunkLineTooLong),
        FramingRefusal(why: "a folded trailer", text: "0\r\nX-A: 1\r\n 2\r\n\r\n", error: .badTrailer),
        FramingRefusal(why: "a trailer without a colon", text: "0\r\nX-A\r\n\r\n", error: .badTrailer),
        FramingRefusal(why: "a trailer ended by a bare LF", text: "0\r\nX-A: 1\n\r\n", error: .badTrailer),
        FramingRefusal(why: "a control character in a trailer", text: "0\r\nX-A: \u{1}\r\n\r\n", error: .badTrailer),
        FramingRefusal(why: "a bare LF ending the body", text: "0\r\n\n", error: .badTrailer),
        FramingRefusal(why: "CR then not LF ending the body", text: "0\r\n\rX", error: .badTrailer),
        FramingRefusal(why: "a trailer section over 64 KiB",
                text: "0\r\n" + String(repeating: "X-A: " + String(repeating: "b", count: 1_000) + "\r\n", count: 70), error: .trailersTooLarge),
    ]

    @Test(arguments: refusals)
    func malformedChunkedFramingIsRefusedWhereverTheBytesAreCut(_ refusal: FramingRefusal) {
        let body = Self.bytes(refusal.text)
        #expect(throws: refusal.error) { _ = try Self.frame(.chunked, [body]) }
        // The same error however the bytes arrive (every cut for short inputs, byte by byte for all).
        let cuts = body.count < 100 ? Self.splits(body) : [body.map { [$0] }]
        for pieces in cuts {
            #expect(throws: refusal.error) { _ = try Self.consume(.chunked, pieces) }
        }
    }
}

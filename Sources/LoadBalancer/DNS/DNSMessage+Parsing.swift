// MARK: - Reading a message (RFC 1035 §4.1)

extension DNSMessage {
    /// Reads a whole message. Throws `DNSMessageError` for anything malformed: a short header, a section that ends
    /// early, a bad label, a compression pointer that loops or points past the end, a name over 255 bytes, a
    /// second OPT record. Bytes after the last section are ignored.
    public init(parsing bytes: [UInt8]) throws(DNSMessageError) {
        var reader = DNSReader(bytes)
        let header = try reader.header()
        self.init(id: header.id)
        let flags = header.flags
        isResponse = flags & 0x8000 != 0
        opcode = UInt8(flags >> 11 & 0x0F)
        isAuthoritative = flags & 0x0400 != 0
        isTruncated = flags & 0x0200 != 0
        recursionDesired = flags & 0x0100 != 0
        recursionAvailable = flags & 0x0080 != 0
        authenticData = flags & 0x0020 != 0
        checkingDisabled = flags & 0x0010 != 0
        var code = flags & 0x000F
        // Counts are not trusted: each entry read consumes bytes that are there, so a huge count only makes the
        // reader fail at the end of the message (nothing is reserved up front).
        for _ in 0..<header.questions { questions.append(try reader.question()) }
        for _ in 0..<header.answers { answers.append(try reader.record()) }
        for _ in 0..<header.authorities { authorities.append(try reader.record()) }
        for _ in 0..<header.additionals {
            let start = reader.offset
            let record = try reader.record()
            guard record.type == .opt else {
                additionals.append(record)
                continue
            }
            guard edns == nil else { throw DNSMessageError(.badOPT, at: start, "a second OPT record") }
            guard record.name.labels.isEmpty else { throw DNSMessageError(.badOPT, at: start, "an OPT record owned by \(record.name), not the root") }
            // OPT's CLASS is the payload size; its TTL is extended RCODE (8 bits), version (8), DO (1), zero (15).
            code |= UInt16(record.ttl >> 24) << 4
            edns = EDNS(
                udpPayloadSize: record.recordClass.rawValue, version: UInt8(record.ttl >> 16 & 0xFF),
                dnssecOK: record.ttl & 0x8000 != 0, options: record.data)
        }
        responseCode = DNSResponseCode(rawValue: code)
    }

    /// The header's ID and whether it is a response, from the first bytes; nil when fewer than 12 bytes. Lets a
    /// server drop what it must not answer (a response: answering it could loop) before reading the rest.
    public static func peekHeader(_ bytes: [UInt8]) -> (id: UInt16, isResponse: Bool, opcode: UInt8)? {
        guard bytes.count >= headerSize else { return nil }
        return (UInt16(bytes[0]) << 8 | UInt16(bytes[1]), bytes[2] & 0x80 != 0, bytes[2] >> 3 & 0x0F)
    }
}

/// A cursor over a message's bytes that checks every read against the end.
struct DNSReader {
    let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    struct Header {
        var id: UInt16
        var flags: UInt16
        var questions: UInt16
        var answers: UInt16
        var authorities: UInt16
        var additionals: UInt16
    }

    mutating func header() throws(DNSMessageError) -> Header {
        guard bytes.count >= DNSMessage.headerSize else {
            throw DNSMessageError(.truncated, at: bytes.count, "the header needs 12 bytes, the message has \(bytes.count)")
        }
        return Header(
            id: try u16(), flags: try u16(), questions: try u16(), answers: try u16(), authorities: try u16(), additionals: try u16())
    }

    mutating func question() throws(DNSMessageError) -> DNSQuestion {
        let name = try name()
        return DNSQuestion(name: name, type: DNSRecordType(rawValue: try u16()), recordClass: DNSRecordClass(rawValue: try u16()))
    }

    mutating func record() throws(DNSMessageError) -> DNSResourceRecord {
        let name = try name()
        let type = DNSRecordType(rawValue: try u16())
        let recordClass = DNSRecordClass(rawValue: try u16())
        let ttl = UInt32(try u16()) << 16 | UInt32(try u16())
        let length = Int(try u16())
        guard length <= bytes.count - offset else {
            throw DNSMessageError(.truncated, at: offset, "record data of \(length) bytes, \(bytes.count - offset) left in the message")
        }
        let data = Array(bytes[offset..<offset + length])
        offset += length
        return DNSResourceRecord(name: name, type: type, recordClass: recordClass, ttl: ttl, data: data)
    }

    mutating func u16() throws(DNSMessageError) -> UInt16 {
        guard offset + 2 <= bytes.count else {
            throw DNSMessageError(.truncated, at: offset, "a 16-bit field runs past the end (\(bytes.count) bytes)")
        }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    /// Reads a name at the cursor, following compression pointers (§4.1.4). A pointer must point strictly before
    /// the place the previous jump started from (for the first, before the name itself): every legitimate pointer
    /// refers to an earlier occurrence, and the strictly falling targets make loops impossible.
    mutating func name() throws(DNSMessageError) -> DNSName {
        var labels: [[UInt8]] = []
        var position = offset
        var resumeAt: Int?
        var limit = offset
        var wireLength = 1
        while true {
            guard position < bytes.count else {
                throw DNSMessageError(.truncated, at: position, "a name runs past the end of the message")
            }
            let length = bytes[position]
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    offset = resumeAt ?? position + 1
                    return DNSName(checked: labels)
                }
                let count = Int(length)
                guard count < bytes.count - position else {
                    throw DNSMessageError(.truncated, at: position, "a label of \(count) bytes runs past the end of the message")
                }
                wireLength += 1 + count
                guard wireLength <= DNSName.maxWireLength else {
                    throw DNSMessageError(.nameTooLong, at: position, "a name longer than \(DNSName.maxWireLength) bytes")
                }
                labels.append(Array(bytes[position + 1...position + count]))
                position += 1 + count
            case 0xC0:
                guard position + 1 < bytes.count else {
                    throw DNSMessageError(.truncated, at: position, "a compression pointer cut in half by the end of the message")
                }
                let target = Int(length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < limit else {
                    throw DNSMessageError(.badPointer, at: position, "a compression pointer to byte \(target), which is not an earlier name")
                }
                if resumeAt == nil { resumeAt = position + 2 }
                limit = target
                position = target
            default:
                throw DNSMessageError(.badLabel, at: position, "label type 0x\(String(length, radix: 16)) (only lengths and pointers exist)")
            }
        }
    }
}

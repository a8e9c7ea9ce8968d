import CZlib

/// The framing of write-ahead-log records: `length u32 | crc32 u32 | type u8 | payload | zero padding` to a
/// multiple of 8 bytes, big endian. The CRC-32 covers the length bytes, the type and the payload, so a flipped
/// bit anywhere — the length included — fails the check.
enum RecordFormat {
    enum RecordType: UInt8 {
        case entry = 1
        case hardState = 2
        /// Entries up to this snapshot point are obsolete.
        case snapshot = 3
    }

    static let headerSize = 9
    /// No record is larger; a length above it is corruption, not a big record.
    static let maxPayload = 64 << 20

    static func padded(_ size: Int) -> Int { (size + 7) & ~7 }

    static func crc(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBufferPointer { buffer in
            UInt32(crc32(0, buffer.baseAddress, uInt(buffer.count)))
        }
    }

    static func encode(_ type: RecordType, _ payload: [UInt8], into output: inout [UInt8]) {
        let start = output.count
        let length = UInt32(payload.count)
        output.append(contentsOf: withUnsafeBytes(of: length.bigEndian, Array.init))
        output.append(contentsOf: [0, 0, 0, 0])
        output.append(type.rawValue)
        output.append(contentsOf: payload)
        var checked = Array(output[start..<(start + 4)])
        checked.append(type.rawValue)
        checked.append(contentsOf: payload)
        let checksum = crc(checked[...])
        output.replaceSubrange((start + 4)..<(start + 8), with: withUnsafeBytes(of: checksum.bigEndian, Array.init))
        let total = padded(headerSize + payload.count)
        output.append(contentsOf: repeatElement(0, count: total - headerSize - payload.count))
    }

    enum Parsed {
        case record(RecordType, ArraySlice<UInt8>, next: Int)
        /// Not a valid record at this offset (checksum, length, type or truncation).
        case invalid(String)
        case end
    }

    static func parse(_ bytes: [UInt8], at offset: Int) -> Parsed {
        guard offset < bytes.count else { return .end }
        guard bytes.count - offset >= headerSize else { return .invalid("truncated record header") }
        let length = Int(UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3]))
        guard length <= maxPayload else { return .invalid("record length \(length) exceeds the maximum") }
        guard bytes.count - offset - headerSize >= length else { return .invalid("record of \(length) bytes is cut short") }
        let stored = UInt32(bytes[offset + 4]) << 24 | UInt32(bytes[offset + 5]) << 16 | UInt32(bytes[offset + 6]) << 8 | UInt32(bytes[offset + 7])
        var checked = Array(bytes[offset..<(offset + 4)])
        checked.append(contentsOf: bytes[(offset + 8)..<(offset + headerSize + length)])
        guard crc(checked[...]) == stored else { return .invalid("checksum mismatch") }
        guard let type = RecordType(rawValue: bytes[offset + 8]) else { return .invalid("unknown record type \(bytes[offset + 8])") }
        let payload = bytes[(offset + headerSize)..<(offset + headerSize + length)]
        let next = min(bytes.count, offset + padded(headerSize + length))
        // Padding is written as zeros; anything else there is damage too.
        guard bytes[(offset + headerSize + length)..<next].allSatisfy({ $0 == 0 }) else { return .invalid("non-zero padding") }
        return .record(type, payload, next: next)
    }

    /// True if a valid record starts anywhere after `offset` (8-byte aligned): then a bad record at `offset`
    /// is corruption in the middle of the log, not a torn tail.
    static func validRecordFollows(_ bytes: [UInt8], after offset: Int) -> Bool {
        var candidate = padded(offset + 1)
        while candidate + headerSize <= bytes.count {
            if case .record = parse(bytes, at: candidate) { return true }
            candidate += 8
        }
        return false
    }
}

// MARK: - Writing a message (RFC 1035 §4.1)

extension DNSMessage {
    /// The message on the wire. Names are compressed (§4.1.4): a name, or its tail, written before is replaced by a
    /// pointer to it (byte-exact matches only, so the case a client sent is echoed as sent). With `edns`, an OPT
    /// record ends the additional section and carries the high 8 bits of `responseCode`.
    public func encoded() -> [UInt8] {
        var writer = DNSWriter()
        var flags: UInt16 = UInt16(opcode & 0x0F) << 11 | responseCode.rawValue & 0x0F
        if isResponse { flags |= 0x8000 }
        if isAuthoritative { flags |= 0x0400 }
        if isTruncated { flags |= 0x0200 }
        if recursionDesired { flags |= 0x0100 }
        if recursionAvailable { flags |= 0x0080 }
        if authenticData { flags |= 0x0020 }
        if checkingDisabled { flags |= 0x0010 }
        writer.u16(id)
        writer.u16(flags)
        writer.u16(UInt16(clamping: questions.count))
        writer.u16(UInt16(clamping: answers.count))
        writer.u16(UInt16(clamping: authorities.count))
        writer.u16(UInt16(clamping: additionals.count + (edns == nil ? 0 : 1)))
        for question in questions.prefix(Int(UInt16.max)) {
            writer.name(question.name)
            writer.u16(question.type.rawValue)
            writer.u16(question.recordClass.rawValue)
        }
        for record in answers.prefix(Int(UInt16.max)) { writer.record(record) }
        for record in authorities.prefix(Int(UInt16.max)) { writer.record(record) }
        for record in additionals.prefix(Int(UInt16.max) - (edns == nil ? 0 : 1)) { writer.record(record) }
        if let edns {
            let ttl = UInt32(responseCode.rawValue >> 4 & 0xFF) << 24 | UInt32(edns.version) << 16 | (edns.dnssecOK ? 0x8000 : 0)
            writer.record(DNSResourceRecord(
                name: .root, type: .opt, recordClass: DNSRecordClass(rawValue: edns.udpPayloadSize), ttl: ttl, data: edns.options))
        }
        return writer.bytes
    }
}

/// Appends a message's parts, remembering where each written name (tail) starts for compression.
struct DNSWriter {
    private(set) var bytes: [UInt8] = []
    /// Offsets of name tails already written, by their exact labels (pointers reach offsets below 0x4000 only).
    private var written: [ArraySlice<[UInt8]>: Int] = [:]

    mutating func u16(_ value: UInt16) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(value & 0xFF))
    }

    mutating func name(_ name: DNSName) {
        var tail = name.labels[...]
        while let label = tail.first {
            if let earlier = written[tail] {
                u16(0xC000 | UInt16(earlier))
                return
            }
            if bytes.count < 0x4000 { written[tail] = bytes.count }
            bytes.append(UInt8(label.count))
            bytes.append(contentsOf: label)
            tail = tail.dropFirst()
        }
        bytes.append(0)
    }

    mutating func record(_ record: DNSResourceRecord) {
        name(record.name)
        u16(record.type.rawValue)
        u16(record.recordClass.rawValue)
        u16(UInt16(record.ttl >> 16))
        u16(UInt16(record.ttl & 0xFFFF))
        let data = record.data.prefix(Int(UInt16.max))
        u16(UInt16(data.count))
        bytes.append(contentsOf: data)
    }
}

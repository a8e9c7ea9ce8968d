internal import Messages

/// A variable: a small value under a key, like Nomad's Variables (`flotilla var put/get/ls/rm`).
///
/// Every variable has a modify index, the log index of the command that last wrote it; check-and-set
/// compares against it (`--cas 0` means "only if absent").
public struct Variable: Sendable, Hashable {
    /// The key: 1 to ``maxKeyBytes`` bytes of visible ASCII, not starting with '/'.
    public var key: String
    /// The value: at most ``maxValueBytes`` bytes; may be empty.
    public var value: [UInt8]
    /// The log index of the command that created the variable.
    public var createIndex: UInt64
    /// The log index of the command that last changed it.
    public var modifyIndex: UInt64

    public init(key: String, value: [UInt8], createIndex: UInt64, modifyIndex: UInt64) {
        self.key = key
        self.value = value
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    /// The longest key, in bytes.
    public static let maxKeyBytes = 512
    /// The largest value, in bytes (512 KiB).
    public static let maxValueBytes = 512 * 1024

    /// Checks a key, and a value if given, against the store's rules; `apply` uses the same checks, so the API
    /// layer can refuse a request before proposing it.
    ///
    /// Keys are restricted to visible ASCII (0x21–0x7E) so that equal keys are equal bytes: Swift compares
    /// `String`s by Unicode canonical equivalence, and Unicode's tables differ between Swift releases, which a
    /// replicated store cannot allow.
    /// - Throws: ``StoreError/Code/invalidArgument`` with a message naming the key and the rule.
    public static func validate(key: String, value: [UInt8]? = nil) throws(StoreError) {
        if let problem = problem(key: key, value: value) {
            throw StoreError(code: .invalidArgument, message: problem)
        }
    }

    /// The rule `key` (and `value`) break, as a sentence; nil when they are fine.
    static func problem(key: String, value: [UInt8]?) -> String? {
        let bytes = key.utf8
        if bytes.isEmpty { return "a variable key may not be empty" }
        if bytes.count > maxKeyBytes {
            return "variable key \(quoted(key, limit: 64)) is \(bytes.count) bytes long; the limit is \(maxKeyBytes)"
        }
        if !bytes.allSatisfy(isVisibleASCII) {
            return "variable key \(quoted(key, limit: 64)) may contain only visible ASCII characters (letters, digits, punctuation; no spaces or control characters)"
        }
        if bytes.first == UInt8(ascii: "/") {
            return "variable key \(quoted(key, limit: 64)) may not start with '/'"
        }
        if let value, value.count > maxValueBytes {
            return "the value of variable \(quoted(key, limit: 64)) is \(value.count) bytes; the limit is \(maxValueBytes) (512 KiB)"
        }
        return nil
    }
}

// MARK: - Protobuf

extension Variable {
    init(proto: Flotilla_V1_Variable) {
        self.init(key: proto.key, value: [UInt8](proto.value), createIndex: proto.createIndex, modifyIndex: proto.modifyIndex)
    }

    var proto: Flotilla_V1_Variable {
        var proto = Flotilla_V1_Variable()
        proto.key = key
        proto.value = .init(value)
        proto.createIndex = createIndex
        proto.modifyIndex = modifyIndex
        return proto
    }
}

// MARK: - Text rules shared by the records

/// 0x21 ('!') through 0x7E ('~').
func isVisibleASCII(_ byte: UInt8) -> Bool { 0x21...0x7E ~= byte }

/// `text` in double quotes for a message, cut to `limit` characters and with anything unprintable escaped, so a
/// hostile key cannot forge log lines.
func quoted(_ text: String, limit: Int) -> String {
    var result = "\""
    for (offset, scalar) in text.unicodeScalars.enumerated() {
        if offset == limit { result += "…"; break }
        result += scalar.escaped(asASCII: true)
    }
    return result + "\""
}

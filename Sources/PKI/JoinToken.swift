public import ClusterModel
import Crypto

/// A join token: `FLTKN-1-<role>-<CA pin>-<id>-<secret>`, e.g.
/// `FLTKN-1-a-<52 base-32 characters>-k3v9q2m7-<26 base-32 characters>`.
///
/// - `1` is the format version; `a` or `c` the role it admits (agent, controller).
/// - The CA pin is the SHA-256 of the cluster CA certificate (DER): a joiner refuses any server whose chain does
///   not end at that CA, so a token cannot be replayed against, or phished by, another cluster.
/// - The id is public (shown by `token ls`, used to revoke); the secret is 128 random bits, of which the cluster
///   keeps only a SHA-256 hash, compared in constant time.
///
/// `description` never shows the secret, so a token can be logged safely by id.
public struct JoinToken: Sendable, Hashable, CustomStringConvertible {
    public static let prefix = "FLTKN"
    public static let formatVersion = 1
    static let idBytes = 5
    static let secretBytes = 16

    public let role: NodeRole
    /// SHA-256 of the cluster CA certificate (DER).
    public let caPin: [UInt8]
    public let id: String
    public let secret: [UInt8]

    public init(role: NodeRole, caPin: [UInt8], id: String, secret: [UInt8]) {
        self.role = role
        self.caPin = caPin
        self.id = id
        self.secret = secret
    }

    /// A fresh token for the CA whose pin (lowercase hex, as `CertificateAuthority.pin`) is `caPinHex`.
    public static func generate(role: NodeRole, caPinHex: String) throws -> JoinToken {
        guard role == .agent || role == .controller else {
            throw PKIError(code: .invalidRequest, message: "join tokens admit agents or controllers, not \(role.rawValue)s")
        }
        guard let pin = Hex.decode(caPinHex), pin.count == 32 else {
            throw PKIError(code: .invalidRequest, message: "'\(caPinHex)' is not a CA pin (64 hex characters)")
        }
        var generator = SystemRandomNumberGenerator()
        let idBytes = (0..<idBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let secret = (0..<secretBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return JoinToken(role: role, caPin: pin, id: Base32.encode(idBytes), secret: secret)
    }

    /// Parses a token as `text` prints it.
    /// - Throws: ``PKIError`` (`invalidToken`) saying which part is wrong.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingWhitespace
        let parts = trimmed.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        func invalid(_ why: String) -> PKIError {
            PKIError(code: .invalidToken, message: "this is not a Flotilla join token: \(why); copy the whole token that `flotilla token create` printed (FLTKN-1-...)")
        }
        guard parts.count == 6, parts[0] == Self.prefix else { throw invalid("it does not have the form FLTKN-1-<role>-<pin>-<id>-<secret>") }
        guard parts[1] == String(Self.formatVersion) else {
            throw PKIError(code: .invalidToken, message: "join token format \(parts[1]) is not one this version reads (\(Self.formatVersion)); use a token from a cluster of the same version")
        }
        let role: NodeRole
        switch parts[2] {
        case "a": role = .agent
        case "c": role = .controller
        default: throw invalid("its role '\(parts[2])' is neither a (agent) nor c (controller)")
        }
        guard let pin = Base32.decode(parts[3]), pin.count == 32 else { throw invalid("its CA pin is damaged") }
        guard let idBytes = Base32.decode(parts[4]), idBytes.count == Self.idBytes else { throw invalid("its id is damaged") }
        guard let secret = Base32.decode(parts[5]), secret.count == Self.secretBytes else { throw invalid("its secret is damaged") }
        self.init(role: role, caPin: pin, id: parts[4], secret: secret)
    }

    /// The token as people copy it.
    public var text: String {
        [Self.prefix, String(Self.formatVersion), role == .controller ? "c" : "a", Base32.encode(caPin), id, Base32.encode(secret)]
            .joined(separator: "-")
    }

    public var caPinHex: String { Hex.encode(caPin) }

    public var description: String { "join token \(id) (\(role.rawValue))" }

    /// What the cluster stores instead of the secret.
    public var secretSHA256: [UInt8] { Self.hash(secret) }

    static func hash(_ secret: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: secret)) }

    /// True when this token's secret hashes to `storedSHA256`; takes the same time wherever the bytes differ.
    public func secretMatches(_ storedSHA256: [UInt8]) -> Bool {
        let computed = secretSHA256
        guard computed.count == storedSHA256.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(computed, storedSHA256) { difference |= a ^ b }
        return difference == 0
    }
}

/// Lowercase RFC 4648 base-32 without padding: short, case-insensitive-safe, no '-' (the token's separator).
enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                output.append(alphabet[Int(buffer >> UInt32(bits - 5) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { output.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return String(decoding: output, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for character in text.lowercased().utf8 {
            guard let value = alphabet.firstIndex(of: character) else { return nil }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                output.append(UInt8(buffer >> UInt32(bits - 8) & 0xFF))
                bits -= 8
            }
        }
        // Leftover bits are padding and must be zero (else the text was not produced by `encode`).
        guard buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return output
    }
}

enum Hex {
    static func encode(_ bytes: [UInt8]) -> String {
        bytes.map { $0 < 0x10 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    static func decode(_ text: String) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: characters.count, by: 2) {
            guard let byte = UInt8(String(decoding: characters[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

extension String {
    var trimmingWhitespace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

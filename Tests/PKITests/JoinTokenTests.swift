import ClusterModel
import Foundation
import PKI
import Testing

@Suite("Join tokens")
struct JoinTokenTests {
    static let pin = String(repeating: "ab", count: 32)

    @Test("a generated token prints and parses back, carrying its role, CA pin, id and a 128-bit secret")
    func roundTrip() throws {
        for role in [NodeRole.agent, .controller] {
            let token = try JoinToken.generate(role: role, caPinHex: Self.pin)
            #expect(token.text.hasPrefix(role == .agent ? "FLTKN-1-a-" : "FLTKN-1-c-"))
            let parsed = try JoinToken(parsing: "  \(token.text)\n")
            #expect(parsed == token)
            #expect(parsed.caPinHex == Self.pin)
            #expect(parsed.secret.count == 16)
            #expect(!token.description.contains(token.text.split(separator: "-").last!))
        }
        // Two tokens never share an id or a secret.
        let a = try JoinToken.generate(role: .agent, caPinHex: Self.pin)
        let b = try JoinToken.generate(role: .agent, caPinHex: Self.pin)
        #expect(a.id != b.id && a.secret != b.secret)
    }

    @Test("the stored hash matches only the token's own secret")
    func secretHash() throws {
        let token = try JoinToken.generate(role: .agent, caPinHex: Self.pin)
        #expect(token.secretMatches(token.secretSHA256))
        var other = token.secretSHA256
        other[31] ^= 1
        #expect(!token.secretMatches(other))
        #expect(!token.secretMatches([]))
    }

    @Test("malformed tokens are refused with a message that says to copy the whole token", arguments: [
        "", "FLTKN", "FLTKN-1-a-x-y", "SWMTKN-1-a-aaaa-bbbbbbbb-cccc-dddd", "FLTKN-1-z-aaaa-bbbbbbbb-cccc",
        "FLTKN-1-a-!!!!-bbbbbbbb-cccccccccccccccccccccccccc", "FLTKN-2-a-aaaa-bbbbbbbb-cccc",
    ])
    func malformed(_ text: String) throws {
        let error = try #require(throws: PKIError.self) { try JoinToken(parsing: text) }
        #expect(error.code == .invalidToken)
    }

    @Test("a token with a truncated secret or pin is refused")
    func truncated() throws {
        let text = try JoinToken.generate(role: .agent, caPinHex: Self.pin).text
        #expect(throws: PKIError.self) { try JoinToken(parsing: String(text.dropLast(2))) }
        var parts = text.split(separator: "-").map(String.init)
        parts[3].removeLast(4)
        #expect(throws: PKIError.self) { try JoinToken(parsing: parts.joined(separator: "-")) }
    }
}

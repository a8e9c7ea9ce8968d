import Foundation
#if canImport(Glibc)
import Glibc
#endif
public import PKI

/// An agent's data directory: its credentials (from joining) and the controllers it last heard of.
public struct AgentDataDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    public var credentialsPath: String { path + "/agent.creds" }
    var controllersPath: String { path + "/controllers" }

    /// True once the agent has joined: a restart reuses its identity without a token.
    public var hasJoined: Bool { FileManager.default.fileExists(atPath: credentialsPath) }

    public func saveCredentials(_ credentials: Credentials) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try credentials.write(to: credentialsPath)
    }

    public func loadCredentials() throws -> Credentials {
        try Credentials.load(from: credentialsPath)
    }

    /// The controllers the leader last listed, so a restarted agent finds the cluster even if the ones it was
    /// started with are gone.
    public func knownControllers() -> [String] {
        guard let text = try? String(contentsOfFile: controllersPath, encoding: .utf8) else { return [] }
        return text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
    }

    public func saveControllers(_ controllers: [String]) {
        let temporary = controllersPath + ".tmp"
        // Best effort: a failure only means a restarted agent must be told where the controllers are.
        guard FileManager.default.createFile(atPath: temporary, contents: Data((controllers.joined(separator: "\n") + "\n").utf8)) else { return }
        _ = rename(temporary, controllersPath)
    }
}

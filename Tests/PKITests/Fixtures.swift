import ClusterModel
import Foundation
import PKI

/// A fixed "now" so certificates and verification times are reproducible.
let fixedNow = Date(timeIntervalSince1970: 1_780_000_000)  // 2026-05-28

let oneDay: Duration = .seconds(86_400)

let agentIdentity = PeerIdentity(nodeID: NodeID("agent-7"), role: .agent)

/// A fresh directory under the system temporary directory; removed by `body`'s caller via `defer`.
func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("pki-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

/// The permission bits of the file at `path` (from stat(2)).
func permissions(of path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

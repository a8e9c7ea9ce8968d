import AdminClient
import ArgumentParser
import Foundation
import Wire

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the controller's id, version and uptime.")

    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let status = try await cluster.withClient { try await $0.status() }
        switch cluster.output {
        case .json:
            let object: [String: Any] = [
                "controller_id": status.controllerID,
                "cluster_id": status.clusterID,
                "version": status.version,
                "protocol_version": status.protocolVersion,
                "uptime_seconds": status.uptimeSeconds,
                "listen_address": status.listenAddress,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
        case .table:
            print("""
                Controller:  \(status.controllerID)
                Cluster:     \(status.clusterID)
                Version:     \(status.version) (protocol \(status.protocolVersion))
                Uptime:      \(formatUptime(status.uptimeSeconds))
                Listening:   \(status.listenAddress)
                """)
        }
    }
}

/// "3d 4h 5m 6s" style, dropping leading zero units.
func formatUptime(_ seconds: Double) -> String {
    var rest = Int(seconds.rounded(.down))
    let days = rest / 86_400; rest %= 86_400
    let hours = rest / 3_600; rest %= 3_600
    let minutes = rest / 60; rest %= 60
    var parts: [String] = []
    if days > 0 { parts.append("\(days)d") }
    if hours > 0 || !parts.isEmpty { parts.append("\(hours)h") }
    if minutes > 0 || !parts.isEmpty { parts.append("\(minutes)m") }
    parts.append("\(rest)s")
    return parts.joined(separator: " ")
}

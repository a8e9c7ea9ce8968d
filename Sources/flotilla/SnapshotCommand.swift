import AdminClient
import ArgumentParser
import Foundation

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Back up the cluster's state.",
        subcommands: [SnapshotSaveCommand.self])
}

struct SnapshotSaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "save",
        abstract: "Write a consistent backup of the cluster to FILE (mode 0600; it contains the cluster CA key).",
        discussion: "Restore it onto a fresh controller with `flotilla-controller --data-dir DIR --restore FILE`.")

    @Argument(help: "Where to write the backup.")
    var file: String

    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let bytes = try await cluster.withClient { try await $0.snapshotSave() }
        let url = URL(fileURLWithPath: file)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw CLIError("could not write \(temporary.path)")
        }
        do {
            _ = try FileManager.default.replaceItemAt(url, withItemAt: temporary)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw CLIError("could not write \(file): \(error.localizedDescription)")
        }
        switch cluster.output {
        case .json:
            print("{\"file\": \"\(file)\", \"bytes\": \(bytes.count)}")
        case .table:
            print("backup written to \(file) (\(bytes.count) bytes)")
        }
    }
}

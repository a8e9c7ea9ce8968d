import AdminClient
import ArgumentParser
import Foundation
import Messages

/// `flotilla image …`: the images stored on the nodes.
struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "List the images the nodes keep.",
        discussion: """
            Each agent pulls the images its tasks need (registries, OCI layouts, OCI archives), keeps them by \
            digest, and removes the ones no task used for a day (or beyond its disk budget). Agents report their \
            images to the leader; a node that has not reported since the leader changed shows as such.
            """,
        subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List each node's images.", aliases: ["list"])

        @Option(name: .customLong("node"), help: "Only this node (id or name).") var node: String?
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let nodes = try await cluster.withClient { try await $0.imageList(node: node ?? "") }
            switch cluster.output {
            case .json:
                try printJSON(nodes.flatMap { entry in entry.images.map { ImageJSON($0, node: entry.nodeName) } })
            case .table:
                var table = TextTable("NODE", "REFERENCE", "DIGEST", "SIZE", "UNPACKED", "IN USE", "LAST USED")
                for entry in nodes {
                    guard entry.reported else {
                        table.append(entry.nodeName, "(not reported)", "-", "-", "-", "-", "-")
                        continue
                    }
                    for image in entry.images {
                        table.append(
                            entry.nodeName, image.reference, String(image.digest.prefix(19)), Self.size(image.sizeBytes),
                            Self.size(image.unpackedBytes), "\(image.inUse)", NodeJSON.ago(image.lastUsedMs))
                    }
                }
                print(table.render())
            }
        }

        /// "12.3 MiB".
        static func size(_ bytes: Int64) -> String {
            let units = ["B", "KiB", "MiB", "GiB", "TiB"]
            var value = Double(bytes)
            var unit = 0
            while value >= 1024 && unit < units.count - 1 {
                value /= 1024
                unit += 1
            }
            return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
        }
    }
}

/// `--output json` of an image on a node.
struct ImageJSON: Encodable {
    let node: String
    let reference: String
    let digest: String
    let size: Int64
    let unpacked: Int64
    let inUse: UInt32
    let createdMs: UInt64
    let lastUsedMs: UInt64

    init(_ image: Flotilla_V1_NodeImage, node: String) {
        self.node = node
        reference = image.reference
        digest = image.digest
        size = image.sizeBytes
        unpacked = image.unpackedBytes
        inUse = image.inUse
        createdMs = image.createdMs
        lastUsedMs = image.lastUsedMs
    }
}

import AdminClient
import ArgumentParser
import Foundation
import ServiceFiles
import Wire

/// `flotilla apply -f FILE`: makes the cluster's services match a file. Idempotent: applying the same file
/// twice changes nothing the second time.
struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Create or update the services a YAML file describes, and say what changed.",
        discussion: """
            The file holds one service (with name:) or several under services: (see docs/cli.md). A service \
            that does not exist is created; one that differs is updated (a rolling update where tasks change); \
            one that matches is left alone. Services not in the file are not touched. Waits until every service \
            it changed has converged unless --detach.
            """)

    @Option(name: .customShort("f"), help: ArgumentHelp("The service file ('-' for standard input).", valueName: "file"))
    var file: String

    @OptionGroup var progress: ServiceCommand.ProgressOptions
    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let text: String
        if file == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else { throw CLIError("cannot read \(file)") }
            text = contents
        }
        let specs: [Flotilla_V1_ServiceSpec]
        do {
            specs = try ServiceFile.parse(text)
        } catch {
            throw CLIError("\(file): \(error)")
        }
        let existing = Dictionary(
            try await cluster.withClient { try await $0.serviceList() }.map { ($0.service.spec.name, $0.service) },
            uniquingKeysWith: { first, _ in first })
        var changed: [String] = []
        var report: [[String: String]] = []
        for spec in specs {
            if let current = existing[spec.name] {
                let spec = ServiceFile.keepingAutoscaledReplicas(spec, current: current.spec)
                let differences = ServiceFile.differences(current.spec, spec)
                if differences.isEmpty {
                    report.append(["service": spec.name, "action": "unchanged"])
                    if cluster.output == .table { print("\(spec.name): unchanged") }
                    continue
                }
                let updated = try await cluster.withClient { try await $0.serviceUpdate(spec, expectedVersion: current.version) }
                changed.append(spec.name)
                report.append(["service": spec.name, "action": "updated", "changed": differences.joined(separator: ","), "version": "\(updated.version)"])
                if cluster.output == .table { print("\(spec.name): updated (\(differences.joined(separator: ", "))), version \(updated.version)") }
            } else {
                let created = try await cluster.withClient { try await $0.serviceCreate(spec) }
                changed.append(spec.name)
                report.append(["service": spec.name, "action": "created", "version": "\(created.version)"])
                if cluster.output == .table { print("\(spec.name): created") }
            }
        }
        for name in changed {
            try await ServiceCommand.waitForConvergence(name, cluster: cluster, progress: progress)
        }
        if cluster.output == .json { try printJSON(report) }
    }
}

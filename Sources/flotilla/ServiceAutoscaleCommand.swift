import AdminClient
import ArgumentParser
import ClusterModel
import ClusterStore
import Foundation
import Messages
import SwiftProtobuf

extension ServiceCommand {
    /// `flotilla service autoscale SERVICE`: the settings, what the leader measures, what the targets ask for,
    /// and the last decisions.
    struct Autoscale: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "autoscale",
            abstract: "Show a service's autoscaling: settings, current metrics, recommended count, last decisions.",
            discussion: """
                The leader measures each autoscaled service from the agents' reports over a sliding window: \
                requests/s and connections in flight to its ready tasks (summed over every node's load balancer), \
                and their CPU (as a percentage of the reservation) and memory. The measurements are soft state: \
                after a leader change they show as not measured until the agents' next reports. The recommended count is what \
                the targets ask for before the windows and limits; each committed decision is kept with its reason.
                """)

        @Argument(help: "The service (name or id).") var name: String
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let response = try await cluster.withClient { try await $0.serviceAutoscale(name) }
            switch cluster.output {
            case .json:
                var options = JSONEncodingOptions()
                options.preserveProtoFieldNames = true
                print(try response.jsonString(options: options))
            case .table:
                print(Self.text(response))
            }
        }

        /// The human-readable report.
        static func text(_ response: Flotilla_V1_ServiceAutoscaleResponse) -> String {
            let spec = response.service.spec
            let autoscale = spec.autoscale
            var lines: [String] = []
            lines.append("service \(spec.name): autoscaled between \(autoscale.min) and \(autoscale.max) replicas")
            var targets: [String] = []
            if autoscale.targetRps > 0 { targets.append("\(autoscale.targetRps) rps") }
            if autoscale.targetConnections > 0 { targets.append("\(autoscale.targetConnections) connections") }
            if autoscale.targetCpuPercent > 0 { targets.append("\(autoscale.targetCpuPercent)% cpu") }
            lines.append("  targets      \(targets.joined(separator: ", ")) per ready replica")
            lines.append("  windows      up \(AutoscaleText.duration(UInt64(autoscale.scaleUpWindowMs))), down \(AutoscaleText.duration(UInt64(autoscale.scaleDownWindowMs)))"
                + "; rates over the last \(AutoscaleText.duration(response.windowMs))")
            lines.append("now")
            lines.append("  replicas     \(response.replicas) (\(response.ready) ready)")
            if response.measured {
                let perReplica = response.ready > 0 ? " (\(AutoscaleText.number(response.requestsPerSecond / Double(response.ready))) per ready replica)" : ""
                lines.append("  requests/s   \(AutoscaleText.number(response.requestsPerSecond))\(perReplica)")
                lines.append("  connections  \(AutoscaleText.number(response.activeConnections))")
                lines.append("  nodes        \(response.nodesReporting) reporting")
            } else {
                lines.append("  traffic      not measured (no load balancer has reported the service to this leader yet)")
            }
            if response.cpuMeasured {
                lines.append("  cpu          \(AutoscaleText.number(response.cpuPercent))% of \(spec.resources.cpuReservationMillis > 0 ? "the reservation" : "one core") per ready replica")
            } else {
                lines.append("  cpu          not measured (needs two usage reports of a ready task)")
            }
            // Memory comes with the first usage report of a ready task.
            lines.append("  memory       \(response.memoryBytes == 0 ? "not measured" : LoadBalancerCommand.Stats.bytes(response.memoryBytes) + " over the ready replicas")")
            lines.append("  recommended  \(response.recommended == 0 ? "- (nothing measured yet)" : AutoscaleText.replicas(response.recommended))")
            let decisions = response.service.autoscaleDecisions
            if decisions.isEmpty {
                lines.append("decisions: none yet")
            } else {
                lines.append("decisions (latest last)")
                for decision in decisions {
                    lines.append("  \(RFC3339.format(unixNanos: decision.atMs &* 1_000_000))  \(decision.from) → \(decision.to)  \(decision.reason)")
                }
            }
            return lines.joined(separator: "\n")
        }
    }
}

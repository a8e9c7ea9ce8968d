import AdminClient
import ArgumentParser
import Foundation
import Messages

/// `flotilla lb …`: the nodes' load balancers.
struct LoadBalancerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lb",
        abstract: "Show what the nodes' load balancers see.",
        discussion: """
            Every agent balances each service's published ports and virtual IP across its ready tasks, and reports \
            its counters to the leader every 2 s when they change. The leader keeps the latest report of each node \
            in memory: after a leader change, a node shows as not reported until its agent's next session.
            """,
        subcommands: [Stats.self])

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stats",
            abstract: "Per service and backend: connections, requests, errors, retries, ejections, bytes, latency.",
            discussion: """
                One row per node and backend, then the service's total over them. Counters count since the node's \
                balancer began serving the service. ACTIVE: connections (TCP mode) or requests (HTTP mode) in \
                flight. CONNS: connections forwarded (TCP mode). REQS: requests forwarded (HTTP mode). IN/OUT: bytes \
                from / to the backend. P50/P99: time to connect (TCP) or to the response \
                head (HTTP), as the upper bound of a histogram bucket. A node whose session has ended shows the age \
                of its last report.
                """)

        @Option(name: .customLong("node"), help: "Only this node (id or name).") var node: String?
        @Argument(help: "Only this service (name or id).") var service: String?
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let nodes = try await cluster.withClient { try await $0.balancerStats(node: node ?? "", service: service ?? "") }
            let rows = BalancerStatsSummary.rows(nodes)
            switch cluster.output {
            case .json:
                try printJSON(BalancerStatsJSON(nodes: nodes, rows: rows))
            case .table:
                print(Self.table(nodes: nodes, rows: rows))
            }
        }

        static func table(nodes: [Flotilla_V1_NodeBalancerStats], rows: [BalancerStatsRow]) -> String {
            let byID = Dictionary(nodes.map { ($0.nodeID, $0) }, uniquingKeysWith: { first, _ in first })
            var table = TextTable(
                "NODE", "SERVICE", "BACKEND", "STATE", "ACTIVE", "CONNS", "REQS", "ERRORS", "RETRIES", "EJECT", "IN", "OUT", "P50", "P99")
            for row in rows {
                let node = row.isTotal ? "-" : byID[row.nodeID].map(nodeText) ?? row.node
                let backend = row.isTotal ? "total" : "\(row.taskID.prefix(12)) \(row.address)"
                let state = row.isTotal ? (row.rejected > 0 ? "\(row.rejected) rejected" : "-") : row.state
                table.append(
                    node, row.service, backend, state, "\(row.active)", "\(row.connections)", "\(row.requests)", "\(row.errors)",
                    "\(row.retries)", "\(row.ejections)", bytes(row.bytesIn), bytes(row.bytesOut), latency(row.latencyMicros(0.5)),
                    latency(row.latencyMicros(0.99)))
            }
            var notes: [String] = []
            for node in nodes {
                if !node.reported {
                    notes.append("\(node.nodeName): no report (its agent has not reported to this leader yet)")
                } else if node.report.omittedBackends > 0 {
                    notes.append("\(node.nodeName): \(node.report.omittedBackends) least busy backends left out of its report (size cap)")
                }
            }
            return ([table.render()] + notes).joined(separator: "\n")
        }

        /// The node's name, with the age of its report when its session has ended.
        static func nodeText(_ node: Flotilla_V1_NodeBalancerStats) -> String {
            node.connected ? node.nodeName : "\(node.nodeName) (stale, \(node.ageMs / 1000)s)"
        }

        /// "1.2 MiB".
        static func bytes(_ count: UInt64) -> String {
            count < 1024 ? "\(count) B" : ImageCommand.List.size(Int64(clamping: count))
        }

        /// "0.5ms", ">10s", "-" with none.
        static func latency(_ micros: UInt64?) -> String {
            guard let micros else { return "-" }
            if micros == UInt64.max { return ">10s" }
            return micros < 1_000_000 ? String(format: "%gms", Double(micros) / 1000) : String(format: "%gs", Double(micros) / 1_000_000)
        }
    }
}

/// `--output json` of `lb stats`: every node (reported or not, with the age of its report), every backend row and
/// every service total, with the latency buckets.
struct BalancerStatsJSON: Encodable {
    struct Node: Encodable {
        let node: String
        let nodeID: String
        let reported: Bool
        let connected: Bool
        let ageMs: UInt64
        let takenMs: UInt64
        let omittedBackends: UInt32

        enum CodingKeys: String, CodingKey {
            case node, reported, connected
            case nodeID = "node_id", ageMs = "age_ms", takenMs = "taken_ms", omittedBackends = "omitted_backends"
        }
    }

    struct Row: Encodable {
        let node: String?
        let nodeID: String?
        let service: String
        let serviceID: String
        let targetPort: UInt32
        let taskID: String?
        let address: String?
        let state: String
        let active, connections, requests, errors, retries, ejections, bytesIn, bytesOut: UInt64
        let rejected: UInt64?
        let latencyP50Micros: UInt64?
        let latencyP99Micros: UInt64?
        let latencyCount: UInt64
        let latencySumMicros: UInt64
        let latencyBuckets: [Bucket]

        struct Bucket: Encodable {
            /// The bucket's upper bound, microseconds; nil for the last (everything above).
            let leMicros: UInt64?
            let count: UInt64
            enum CodingKeys: String, CodingKey { case count, leMicros = "le_micros" }
        }

        enum CodingKeys: String, CodingKey {
            case node, service, address, state, active, connections, requests, errors, retries, ejections, rejected
            case nodeID = "node_id", serviceID = "service_id", targetPort = "target_port", taskID = "task_id"
            case bytesIn = "bytes_in", bytesOut = "bytes_out", latencyP50Micros = "latency_p50_micros"
            case latencyP99Micros = "latency_p99_micros", latencyCount = "latency_count", latencySumMicros = "latency_sum_micros"
            case latencyBuckets = "latency_buckets"
        }

        init(_ row: BalancerStatsRow) {
            node = row.isTotal ? nil : row.node
            nodeID = row.isTotal ? nil : row.nodeID
            service = row.service
            serviceID = row.serviceID
            targetPort = row.targetPort
            taskID = row.isTotal ? nil : row.taskID
            address = row.isTotal ? nil : row.address
            state = row.state
            active = row.active
            connections = row.connections
            requests = row.requests
            errors = row.errors
            retries = row.retries
            ejections = row.ejections
            bytesIn = row.bytesIn
            bytesOut = row.bytesOut
            rejected = row.isTotal ? row.rejected : nil
            // Above the last bound has no number of its own: left out rather than shown as UInt64.max.
            latencyP50Micros = row.latencyMicros(0.5).flatMap { $0 == UInt64.max ? nil : $0 }
            latencyP99Micros = row.latencyMicros(0.99).flatMap { $0 == UInt64.max ? nil : $0 }
            latencyCount = row.latencyCount
            latencySumMicros = row.latencySumMicros
            latencyBuckets = row.latencyCounts.enumerated().map { index, count in
                Bucket(leMicros: index < row.latencyBoundsMicros.count ? row.latencyBoundsMicros[index] : nil, count: count)
            }
        }
    }

    let nodes: [Node]
    /// One per node and backend.
    let backends: [Row]
    /// One per service port: the sums over its backends and nodes.
    let services: [Row]

    init(nodes: [Flotilla_V1_NodeBalancerStats], rows: [BalancerStatsRow]) {
        self.nodes = nodes.map {
            Node(node: $0.nodeName, nodeID: $0.nodeID, reported: $0.reported, connected: $0.connected, ageMs: $0.ageMs,
                 takenMs: $0.report.takenMs, omittedBackends: $0.report.omittedBackends)
        }
        backends = rows.filter { !$0.isTotal }.map(Row.init)
        services = rows.filter(\.isTotal).map(Row.init)
    }
}

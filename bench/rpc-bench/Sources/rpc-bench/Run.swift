// `rpc-bench run`: PKI, both servers as child processes, one client connection to each, the scenarios
// alternating between the systems, and a Markdown report.
import ClusterModel
import Foundation
import PKI
import Wire

enum System: String, CaseIterable, Sendable {
    case flotilla = "Flotilla"
    case grpc = "grpc-swift-2"
}

enum Scenario: Hashable, Sendable, CustomStringConvertible {
    case unary(concurrency: Int)
    case stream

    var description: String {
        switch self {
        case .unary(let c): "unary, concurrency \(c)"
        case .stream: "server streaming"
        }
    }
}

enum Sample: Sendable {
    case unary(UnaryResult)
    case stream(StreamResult)
}

func runBenchmark(_ settings: BenchSettings) async throws {
    let now = Date()
    let authority = try CertificateAuthority.create(clusterID: "rpc-bench", now: now)
    let serverCredentials = try Credentials.issue(
        by: authority, identity: PeerIdentity(nodeID: NodeID("bench-server"), role: .controller),
        now: now, validity: .seconds(86_400))
    let clientCredentials = try Credentials.issue(
        by: authority, identity: PeerIdentity(nodeID: NodeID("bench-client"), role: .admin),
        now: now, validity: .seconds(86_400))
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("rpc-bench-\(ProcessInfo.processInfo.processIdentifier)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let credentialsPath = directory + "/server.pem"
    try serverCredentials.write(to: credentialsPath)

    let scenarios: [Scenario] = settings.concurrencies.map { .unary(concurrency: $0) } + [.stream]
    let perMeasurement = settings.warmup + settings.duration + 5
    let maxSeconds = Double(settings.rounds * scenarios.count * 2) * perMeasurement + 300

    let flotillaServer = try ServerProcess(
        name: "Flotilla", subcommand: "serve-flotilla", credentialsPath: credentialsPath, maxSeconds: maxSeconds)
    defer { flotillaServer.stop() }
    let grpcServer = try ServerProcess(
        name: "grpc-swift-2", subcommand: "serve-grpc", credentialsPath: credentialsPath, maxSeconds: maxSeconds,
        extraArguments: settings.grpcFlushCoalescing ? [] : ["--grpc-flush-coalescing", "off"])
    defer { grpcServer.stop() }

    note("servers up: Flotilla pid \(flotillaServer.pid) port \(flotillaServer.port), "
        + "gRPC pid \(grpcServer.pid) port \(grpcServer.port)")

    var results: [Int: [Scenario: [System: Sample]]] = [:]
    try await FlotillaSide.withClient(port: flotillaServer.port, credentials: clientCredentials) { flotilla in
        try await GRPCSide.withClient(
            port: grpcServer.port, credentials: clientCredentials, flushCoalescing: settings.grpcFlushCoalescing
        ) { grpc in
            // Sanity: both echo correctly before anything is timed.
            try await check(flotilla)
            try await check(grpc)
            for round in 1...settings.rounds {
                // Alternate which system goes first, round by round.
                let order: [System] = round % 2 == 1 ? [.flotilla, .grpc] : [.grpc, .flotilla]
                for scenario in scenarios {
                    for system in order where settings.only == nil || settings.only == system.rawValue {
                        let measurement: Sample
                        switch (scenario, system) {
                        case (.unary(let c), .flotilla):
                            measurement = .unary(try await measureUnary(flotilla, serverPID: flotillaServer.pid, settings: settings, concurrency: c))
                        case (.unary(let c), .grpc):
                            measurement = .unary(try await measureUnary(grpc, serverPID: grpcServer.pid, settings: settings, concurrency: c))
                        case (.stream, .flotilla):
                            measurement = .stream(try await measureStream(flotilla, serverPID: flotillaServer.pid, settings: settings))
                        case (.stream, .grpc):
                            measurement = .stream(try await measureStream(grpc, serverPID: grpcServer.pid, settings: settings))
                        }
                        results[round, default: [:]][scenario, default: [:]][system] = measurement
                        note("round \(round), \(scenario), \(system.rawValue): \(summary(measurement))")
                    }
                }
            }
        }
    }

    print(report(results, scenarios: scenarios, settings: settings))
}

private func check<T: EchoTarget>(_ target: T) async throws {
    var request = Flotilla_V1_EchoRequest()
    request.payload = Data("hello".utf8)
    guard try await target.unary(request) == 5 else { throw BenchError("\(target.name): bad unary echo") }
    request.repeat = 3
    let (messages, bytes) = try await target.expand(request)
    guard messages == 3, bytes == 15 else { throw BenchError("\(target.name): bad Expand") }
}

func note(_ message: String) {
    FileHandle.standardError.write(Data("[rpc-bench] \(message)\n".utf8))
}

private func f(_ value: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", value) }

private func summary(_ m: Sample) -> String {
    switch m {
    case .unary(let r):
        "\(f(r.callsPerSecond)) calls/s, p50 \(f(r.percentile(50) / 1000, 1)) µs, p99 \(f(r.percentile(99) / 1000, 1)) µs"
    case .stream(let r):
        "\(f(r.megabytesPerSecond, 1)) MB/s"
    }
}

private func median(_ values: [Double]) -> Double {
    let sorted = values.filter { !$0.isNaN }.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// The numbers one row shows.
private struct Row {
    var callsPerSecond = Double.nan, p50 = Double.nan, p99 = Double.nan, megabytesPerSecond = Double.nan
    var clientCPU = Double.nan, serverCPU = Double.nan, cpuPerCall = Double.nan, calls = 0

    init(_ m: Sample) {
        switch m {
        case .unary(let r):
            callsPerSecond = r.callsPerSecond
            p50 = r.percentile(50) / 1000
            p99 = r.percentile(99) / 1000
            clientCPU = r.clientCPU / r.seconds * 100
            serverCPU = r.serverCPU / r.seconds * 100
            cpuPerCall = (r.clientCPU + r.serverCPU) / Double(r.calls) * 1e6
            calls = r.calls
        case .stream(let r):
            megabytesPerSecond = r.megabytesPerSecond
            clientCPU = r.clientCPU / r.seconds * 100
            serverCPU = r.serverCPU / r.seconds * 100
            calls = r.messages
        }
    }

    init(median rows: [Row]) {
        callsPerSecond = median(rows.map(\.callsPerSecond))
        p50 = median(rows.map(\.p50))
        p99 = median(rows.map(\.p99))
        megabytesPerSecond = median(rows.map(\.megabytesPerSecond))
        clientCPU = median(rows.map(\.clientCPU))
        serverCPU = median(rows.map(\.serverCPU))
        cpuPerCall = median(rows.map(\.cpuPerCall))
        let medianCalls = median(rows.map { Double($0.calls) })
        calls = medianCalls.isNaN ? 0 : Int(medianCalls)
    }
}

private func cell(_ v: Double, _ digits: Int = 0) -> String { v.isNaN ? "–" : f(v, digits) }

private func table(_ rows: [(Scenario, System, Row)]) -> String {
    var out = "| Scenario | System | calls/s | p50 µs | p99 µs | MB/s | calls (msgs) | client CPU % | server CPU % | CPU µs/call |\n"
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for (scenario, system, r) in rows {
        out += "| \(scenario) | \(system.rawValue) | \(cell(r.callsPerSecond)) | \(cell(r.p50, 1)) | \(cell(r.p99, 1)) "
            + "| \(cell(r.megabytesPerSecond, 1)) | \(r.calls) | \(cell(r.clientCPU)) | \(cell(r.serverCPU)) | \(cell(r.cpuPerCall, 1)) |\n"
    }
    return out
}

private func report(
    _ results: [Int: [Scenario: [System: Sample]]], scenarios: [Scenario], settings: BenchSettings
) -> String {
    var out = "### rpc-bench results\n\n"
    out += "Settings: \(Int(settings.duration)) s measured after \(Int(settings.warmup)) s warm-up per measurement, "
        + "\(settings.rounds) round(s) alternating the order; unary payload \(settings.payload) B; "
        + "streaming: Expand of \(settings.streamRepeat) × \(settings.streamMessage) B per call. "
        + "One connection per system, mutual TLS, servers in their own processes. MB = 10^6 bytes of payload. "
        + "CPU % is of one core (2 cores = 200 %). gRPC flush coalescing: "
        + (settings.grpcFlushCoalescing ? "default (on)" : "off") + ".\n\n"
    var medians: [Scenario: [System: Row]] = [:]
    for scenario in scenarios {
        for system in System.allCases {
            let rows = (1...settings.rounds).compactMap { results[$0]?[scenario]?[system] }.map(Row.init)
            medians[scenario, default: [:]][system] = Row(median: rows)
        }
    }
    if settings.rounds > 1 {
        for round in 1...settings.rounds {
            out += "#### Round \(round)\n\n"
            var rows: [(Scenario, System, Row)] = []
            for scenario in scenarios {
                for system in System.allCases {
                    if let m = results[round]?[scenario]?[system] { rows.append((scenario, system, Row(m))) }
                }
            }
            out += table(rows) + "\n"
        }
        out += "#### Median of \(settings.rounds) rounds\n\n"
    }
    var rows: [(Scenario, System, Row)] = []
    for scenario in scenarios {
        for system in System.allCases { rows.append((scenario, system, medians[scenario]![system]!)) }
    }
    out += table(rows) + "\n"

    out += "#### Ratios Flotilla / grpc-swift-2\n\n"
    out += "| Scenario | calls/s (>1 better) | p50 (<1 better) | p99 (<1 better) | MB/s (>1 better) | CPU/call (<1 better) |\n"
    out += "|---|---:|---:|---:|---:|---:|\n"
    for scenario in scenarios {
        let a = medians[scenario]![.flotilla]!, b = medians[scenario]![.grpc]!
        out += "| \(scenario) | \(cell(a.callsPerSecond / b.callsPerSecond, 2)) | \(cell(a.p50 / b.p50, 2)) "
            + "| \(cell(a.p99 / b.p99, 2)) | \(cell(a.megabytesPerSecond / b.megabytesPerSecond, 2)) "
            + "| \(cell(a.cpuPerCall / b.cpuPerCall, 2)) |\n"
    }
    return out
}

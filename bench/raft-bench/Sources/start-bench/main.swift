// start-bench: the agent's container start latency (issue 6): assignment received → task reported running,
// with a cached image, through the real worker and OCI driver. Run as root by ../start-bench.sh.
//
//   start-bench --image oci:DIR:TAG --work DIR [--runtimes crun,runc] [--networks host,bridge] [--starts 50]
//               [--warmup 3] [--timeout-ms 30000] [--json FILE]
//
// Per runtime, one `TaskWorker` with the OCI driver as the agent builds it (`OCIRuntimeSetup.make`, the runtime
// preferred, data and state under --work); the first untimed start imports the image. Per network
// ("host": the host's network; "bridge": the node network, set up here on 10.250.0.0/24 of 10.250.0.0/16 as the
// leader's session would, then torn down), `--warmup` (at least 1) untimed starts, then `--starts` timed ones,
// one at a time: the clock starts when `TaskWorker.apply` is called with a complete set holding one new task (the demo image,
// one port, no health check: it is running once its runtime has started it), and stops when `takeStatuses()`,
// polled every millisecond, reports it running. Each task is then stopped (an empty complete set; not timed)
// before the next starts. A start that fails or takes longer than --timeout-ms counts as failed, is stopped,
// and the series goes on.
//
// Where the time goes: while each task runs, the bench reads the times the kernel stamped on its bundle's
// files (mtime, the kernel's coarse clock: a few ms of granularity): the overlay's work directory (mounted, once
// the image was prepared and the bundle's directories made), config.json (network attached, config written), output.log (runtime
// `create` launched), container.pid (written by `create`) and runtime.log (`start` launched).
//
// Human lines on stderr, one JSON document on stdout (or --json FILE).
import Agent
import ContainerRuntime
import Foundation
import Logging
import Messages

#if canImport(Glibc)
import Glibc
#endif

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func say(_ line: String) { FileHandle.standardError.write(Data(("start-bench: " + line + "\n").utf8)) }

// MARK: - Arguments

struct Settings: Sendable {
    var values: [String: String] = [:]

    init(_ argv: [String]) {
        var index = 1
        while index < argv.count {
            guard argv[index].hasPrefix("--"), index + 1 < argv.count else {
                say("bad argument \(argv[index]); see the head of bench/raft-bench/Sources/start-bench/main.swift")
                exit(2)
            }
            values[String(argv[index].dropFirst(2))] = argv[index + 1]
            index += 2
        }
    }

    func string(_ name: String, _ fallback: String? = nil) -> String {
        guard let value = values[name] ?? fallback else {
            say("--\(name) is required")
            exit(2)
        }
        return value
    }

    func count(_ name: String, _ fallback: Int) -> Int {
        guard let raw = values[name] else { return fallback }
        guard let value = Int(raw), value >= 0 else {
            say("--\(name) \(raw): not a count")
            exit(2)
        }
        return value
    }

    var image: String { string("image") }
    var work: String { string("work") }
    var runtimes: [String] { string("runtimes", "crun,runc").split(separator: ",").map(String.init) }
    var networks: [String] { string("networks", "host,bridge").split(separator: ",").map(String.init) }
    var starts: Int { count("starts", 50) }
    /// The first imports the image: later starts find it cached.
    var warmup: Int { max(1, count("warmup", 3)) }
    var timeout: Duration { .milliseconds(count("timeout-ms", 30_000)) }
}

// MARK: - Measuring

/// One timed start: the latency, the bundle's phase marks (ms after the apply), or why it failed.
struct Start {
    var latencyMs: Double?
    var phases: [String: Double] = [:]
    var failure: String?
}

/// Nearest-rank percentile (index round(p/100 * (n-1))), as the other benches compute it.
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((p / 100 * Double(sorted.count - 1)).rounded()))]
}

func round2(_ value: Double) -> Double { (value * 100).rounded() / 100 }

/// The bundle files whose mtime marks a phase of the OCI driver's start, in order, with the phase they end.
enum Marks {
    static let all: [(file: String, phase: String)] = [
        ("work", "image prepared, overlay mounted"), ("config.json", "network + config.json"),
        ("output.log", "create launched"), ("container.pid", "create done"), ("runtime.log", "start launched"),
    ]
}

/// A file's mtime as Unix seconds; nil when it is missing.
func modified(_ path: String) -> Double? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
}

func assignment(_ id: String, image: String, network: String) -> Flotilla_V1_TaskAssignment {
    var assignment = Flotilla_V1_TaskAssignment()
    assignment.taskID = id
    assignment.serviceID = "bench"
    assignment.serviceName = "bench"
    assignment.desiredState = .running
    assignment.nodeName = "bench"
    assignment.spec.name = "bench"
    assignment.spec.driver = "oci"
    assignment.spec.image = image
    assignment.spec.network = network
    assignment.spec.restartPolicy.condition = "none"
    assignment.spec.stopGracePeriodMs = 5_000
    var port = Flotilla_V1_PortSpec()
    port.targetPort = 8080
    port.protocol = "http"
    assignment.spec.ports = [port]
    return assignment
}

/// Applies complete sets with increasing generations, as the leader's session does.
actor Leader {
    let worker: TaskWorker
    var generation: UInt64 = 0
    init(_ worker: TaskWorker) { self.worker = worker }

    func assign(_ assignments: [Flotilla_V1_TaskAssignment]) async {
        generation += 1
        var update = Flotilla_V1_SessionUpdate()
        update.assignmentsComplete = true
        update.assignmentsGeneration = generation
        update.assignments = assignments
        await worker.apply(update)
    }
}

/// Starts one task and waits (bounded) until it is reported running; stops it afterwards.
func timedStart(_ leader: Leader, _ settings: Settings, id: String, network: String, bundles: String) async -> Start {
    let timeout = settings.timeout
    var result = Start()
    _ = await leader.worker.takeStatuses()
    let wall = Date().timeIntervalSince1970
    let begin = ContinuousClock.now
    await leader.assign([assignment(id, image: settings.image, network: network)])
    polling: while ContinuousClock.now - begin < timeout {
        for status in await leader.worker.takeStatuses() where status.taskID == id {
            switch status.state {
            case .running:
                let elapsed = ContinuousClock.now - begin
                result.latencyMs = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
                break polling
            case .failed, .complete, .shutdown:
                result.failure = status.message
                break polling
            default:
                continue
            }
        }
        try? await Task.sleep(for: .milliseconds(1))
    }
    if result.latencyMs == nil && result.failure == nil { result.failure = "not running after \(timeout)" }
    if result.latencyMs != nil {
        let bundle = bundles + "/flt-" + id
        for mark in Marks.all {
            if let at = modified(bundle + "/" + mark.file) { result.phases[mark.phase] = (at - wall) * 1000 }
        }
    }
    await leader.assign([])  // stopped (and its container deleted) when this returns
    return result
}

// MARK: - Series

struct Series {
    let runtime: String
    let network: String
    var starts: [Start] = []

    var json: [String: Any] {
        let latencies = starts.compactMap(\.latencyMs).sorted()
        var object: [String: Any] = [
            "runtime": runtime, "network": network, "starts": starts.count, "failed": starts.count - latencies.count,
            "failures": Array(Set(starts.compactMap(\.failure))).sorted(),
            "latencies_ms": starts.map { $0.latencyMs.map(round2) ?? -1 },
        ]
        guard !latencies.isEmpty else { return object }
        for p in [50.0, 90, 99] { object["p\(Int(p))_ms"] = round2(percentile(latencies, p)) }
        object["min_ms"] = round2(latencies.first!)
        object["max_ms"] = round2(latencies.last!)
        object["mean_ms"] = round2(latencies.reduce(0, +) / Double(latencies.count))
        // Median time of each phase mark, after the apply (ms).
        var phases: [String: Double] = [:]
        for mark in Marks.all {
            let values = starts.compactMap { $0.phases[mark.phase] }.sorted()
            if !values.isEmpty { phases[mark.phase] = round2(percentile(values, 50)) }
        }
        object["phase_marks_p50_ms"] = phases
        return object
    }
}

let settings = Settings(CommandLine.arguments)
let (work, image, starts, warmup, networks) = (settings.work, settings.image, settings.starts, settings.warmup, settings.networks)
guard getuid() == 0 else {
    say("needs root (mounts, cgroups, namespaces)")
    exit(2)
}
let logger = Logger(label: "start-bench") { _ in SwiftLogNoOpLogHandler() }
var results: [Series] = []
var chosen: [String: String] = [:]
for runtime in settings.runtimes {
    // One node per runtime: its own cgroup parent, state directory and network names.
    let nodeID = "startbench\(runtime)"
    let data = work + "/" + runtime
    let driver: OCIDriver
    switch OCIRuntimeSetup.make(preferred: runtime, dataDirectory: data, nodeID: nodeID, runDirectory: work + "/run") {
    case .success(let made): driver = made
    case .failure(let why):
        say("\(runtime): no OCI driver: \(why)")
        continue
    }
    guard driver.runtime.name == runtime else {
        say("\(runtime) asked for, \(driver.runtime.name) chosen; skipped")
        continue
    }
    chosen[runtime] = "\(driver.runtime.binary)"
    var supervision = TaskWorker.Settings()
    supervision.stopGrace = .seconds(5)
    let worker = TaskWorker(logger: logger, runtimes: [driver], settings: supervision)
    let leader = Leader(worker)
    for network in networks {
        if network == "bridge" {
            do {
                try await driver.networking?.configure(subnet: "10.250.0.0/24", clusterNetwork: "10.250.0.0/16", routes: [])
            } catch {
                say("\(runtime): the bridge network could not be set up: \(error); series skipped")
                continue
            }
        }
        var series = Series(runtime: runtime, network: network)
        say("\(runtime), \(network) network: \(warmup) warm-up starts, then \(starts) timed")
        for index in 0..<(warmup + starts) {
            let start = await timedStart(leader, settings, id: "sb\(runtime.prefix(2))\(network.prefix(2))\(index)", network: network, bundles: data + "/bundles")
            if let failure = start.failure { say("  start \(index): \(failure)") }
            if index >= warmup { series.starts.append(start) }
        }
        let summary = series.json
        say("  p50 \(summary["p50_ms"] ?? "-") ms, p99 \(summary["p99_ms"] ?? "-") ms, failed \(summary["failed"] ?? 0)")
        results.append(series)
    }
    await worker.stopAll()
    await driver.networking?.tearDown()
    driver.releaseState()
    // The runtimes remove each container's cgroup; the node's parent is the agent's (here: ours) to remove.
    for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
        rmdir("/sys/fs/cgroup/\(hierarchy)/\(driver.cgroupParent)")
    }
}

// MARK: - Report

var report: [String: Any] = [
    "image": image, "starts": starts, "warmup": warmup, "runtimes": chosen, "series": results.map(\.json),
]
var ratios: [String: Double] = [:]
for network in networks {
    let p50 = { (runtime: String) in results.first { $0.runtime == runtime && $0.network == network }?.json["p50_ms"] as? Double }
    if let crun = p50("crun"), let runc = p50("runc"), runc > 0 { ratios[network] = round2(crun / runc) }
}
report["p50_ratio_crun_over_runc"] = ratios
let document = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
if let path = settings.values["json"] {
    try document.write(to: URL(fileURLWithPath: path))
} else {
    FileHandle.standardOutput.write(document + Data("\n".utf8))
}
exit(results.allSatisfy { $0.starts.allSatisfy { $0.latencyMs != nil } } && !results.isEmpty ? 0 : 1)

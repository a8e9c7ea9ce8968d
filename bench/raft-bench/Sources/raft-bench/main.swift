// raft-bench: the load generator for the Flotilla side of ../raft-bench.sh (issue 3).
//
//   raft-bench load     --addresses A,B,C --credentials admin.creds [--conc 1,16,64] [--duration 10]
//                       [--warmup 2] [--value-size 100] [--clients 0] [--max-ops 2000000] [--json FILE]
//   raft-bench failover --addresses A,B,C --credentials admin.creds --pid-dir DIR --restart CMD
//                       [--trials 5] [--timeout-ms 300] [--json FILE]
//   raft-bench placements ... (Placements.swift)
//
// `load`: for each concurrency c, c writers each call `varPut` in a loop (one call in flight per writer)
// for warm-up + duration seconds; only calls *started* inside the measured window count. Each writer writes
// its own keys ("bench/c<c>/w<writer>/<n mod 200>"), so writers never touch the same key. Latency is the
// wall time of one `AdminClient.varPut` (the leader has fsynced it and a majority has it: committed and
// applied). Writers share AdminClients round-robin: --clients 0 (default) gives every writer its own client
// (its own TLS connection), like etcd-bench.py gives every worker its own HTTP connection.
//
// `failover`: one sequential writer per controller (its AdminClient lists that controller first), each call
// with a short timeout and an immediate retry (5 ms pause after a failure, as etcd-bench.py does). The
// leader's process (PID from <pid-dir>/ctl<i>.pid) gets SIGKILL; the gap is the time from the kill to the
// completion of the first successful put that was *invoked after* the kill. The killed controller is then
// restarted by running `<restart> <i>` and the cluster is given time to settle. Same definition as
// etcd-bench.py's failover mode.
//
// Every loop is bounded by time and by count. Results: human lines on stderr, one JSON document on stdout
// (or --json FILE).
import AdminClient
import Foundation
import PKI
import Synchronization
import Wire

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Arguments

struct Arguments {
    var values: [String: String] = [:]
    let command: String

    init(_ argv: [String]) throws {
        guard argv.count >= 2 else { throw BenchError("usage: raft-bench load|failover --addresses A,B,C --credentials FILE ...") }
        command = argv[1]
        var index = 2
        while index < argv.count {
            let flag = argv[index]
            guard flag.hasPrefix("--"), index + 1 < argv.count else { throw BenchError("bad argument \(flag)") }
            values[String(flag.dropFirst(2))] = argv[index + 1]
            index += 2
        }
    }

    func string(_ name: String, _ fallback: String? = nil) throws -> String {
        if let value = values[name] ?? fallback { return value }
        throw BenchError("--\(name) is required")
    }

    func double(_ name: String, _ fallback: Double) throws -> Double {
        guard let raw = values[name] else { return fallback }
        guard let value = Double(raw) else { throw BenchError("--\(name) \(raw): not a number") }
        return value
    }

    func int(_ name: String, _ fallback: Int) throws -> Int {
        guard let raw = values[name] else { return fallback }
        guard let value = Int(raw) else { throw BenchError("--\(name) \(raw): not an integer") }
        return value
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func log(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

let clock = ContinuousClock()
let origin = clock.now

/// Seconds since the process started (monotonic).
func now() -> Double {
    let elapsed = clock.now - origin
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

func sleep(seconds: Double) async {
    try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
}

/// Nearest-rank percentile exactly as etcd-bench.py computes it (index round(p/100 * (n-1))).
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let k = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count - 1)).rounded())))
    return sorted[k]
}

func round2(_ value: Double) -> Double { (value * 100).rounded() / 100 }
func round3(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

/// The addresses rotated so that `first` comes first.
func rotated(_ addresses: [String], first: Int) -> [String] {
    Array(addresses[first...] + addresses[..<first])
}

// MARK: - CPU accounting

/// utime + stime of a process in seconds (from /proc/<pid>/stat), nil if it is gone.
func cpuSeconds(_ pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the ")": state is field 3 of the full line, so utime (14) and stime (15) are at 11 and 12.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func selfCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// The controllers' PIDs from <pid-dir>/ctl<i>.pid (i = 1...count).
func controllerPIDs(_ directory: String?, count: Int) -> [Int32] {
    guard let directory else { return [] }
    return (1...count).compactMap { index in
        (try? String(contentsOfFile: "\(directory)/ctl\(index).pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

// MARK: - Load

/// What one writer saw.
struct WriterResult: Sendable {
    var latencies: [Double] = []
    var errors = 0
    var lastCompletion = 0.0
    var firstError: String?
}

/// Shared, bounded op counter (all writers of a phase).
final class Budget: Sendable {
    private let used = Atomic<Int>(0)
    let limit: Int
    init(limit: Int) { self.limit = limit }
    func take() -> Bool { used.add(1, ordering: .relaxed).newValue <= limit }
}

func runLoadPhase(
    concurrency: Int, clients: [AdminClient], warmup: Double, duration: Double, value: Data, maxOps: Int
) async -> [String: Any] {
    let start = now()
    let measureFrom = start + warmup
    let end = measureFrom + duration
    let budget = Budget(limit: maxOps)
    let results = await withTaskGroup(of: WriterResult.self) { group in
        for writer in 0..<concurrency {
            let client = clients[writer % clients.count]
            group.addTask {
                var result = WriterResult()
                var n = 0
                while now() < end, budget.take() {
                    let key = "bench/c\(concurrency)/w\(writer)/\(n % 200)"
                    n += 1
                    let t0 = now()
                    do {
                        _ = try await client.varPut(key: key, value: value, timeout: .seconds(5))
                        let t1 = now()
                        if t0 >= measureFrom {
                            result.latencies.append(t1 - t0)
                            result.lastCompletion = max(result.lastCompletion, t1)
                        }
                    } catch {
                        if t0 >= measureFrom { result.errors += 1 }
                        if result.firstError == nil { result.firstError = "\(error)" }
                        await sleep(seconds: 0.01)
                    }
                }
                return result
            }
        }
        var all: [WriterResult] = []
        for await result in group { all.append(result) }
        return all
    }
    var latencies = results.flatMap(\.latencies)
    latencies.sort()
    let errors = results.reduce(0) { $0 + $1.errors }
    let lastCompletion = results.map(\.lastCompletion).max() ?? end
    let elapsed = max(end, lastCompletion) - measureFrom
    var phase: [String: Any] = [
        "concurrency": concurrency, "seconds": round2(elapsed), "ok": latencies.count, "errors": errors,
        "ops_per_s": (Double(latencies.count) / elapsed * 10).rounded() / 10,
        "p50_ms": round2(percentile(latencies, 50) * 1000), "p99_ms": round2(percentile(latencies, 99) * 1000),
        "max_ms": round2((latencies.last ?? .nan) * 1000),
        "clients": clients.count,
    ]
    if let firstError = results.compactMap(\.firstError).first { phase["first_error"] = firstError }
    return phase
}

func load(_ arguments: Arguments) async throws -> [String: Any] {
    let addresses = try arguments.string("addresses").split(separator: ",").map(String.init)
    let credentials = try Credentials.load(from: try arguments.string("credentials"))
    let concurrencies = try arguments.string("conc", "1,16,64").split(separator: ",").compactMap { Int($0) }
    let duration = try arguments.double("duration", 10)
    let warmup = try arguments.double("warmup", 2)
    let valueSize = try arguments.int("value-size", 100)
    let clientCount = try arguments.int("clients", 0)
    let maxOps = try arguments.int("max-ops", 2_000_000)
    let value = Data((0..<valueSize).map { UInt8(0x61 + $0 % 26) })
    var phases: [[String: Any]] = []
    for concurrency in concurrencies {
        let count = clientCount <= 0 ? concurrency : min(clientCount, concurrency)
        var clients: [AdminClient] = []
        for index in 0..<count {
            clients.append(try await AdminClient.connect(
                to: rotated(addresses, first: index % addresses.count), credentials: credentials))
        }
        let pids = controllerPIDs(arguments.values["pid-dir"], count: addresses.count)
        let cpuBefore = pids.map { cpuSeconds($0) ?? 0 }
        let selfBefore = selfCPUSeconds()
        let wallBefore = now()
        var phase = await runLoadPhase(
            concurrency: concurrency, clients: clients, warmup: warmup, duration: duration, value: value,
            maxOps: maxOps)
        let wall = now() - wallBefore
        // CPU over the whole phase (warm-up included), in % of one core.
        phase["controller_cpu_pct"] = zip(pids, cpuBefore).map { ((cpuSeconds($0) ?? $1) - $1) / wall * 100 }.map { $0.rounded() }
        phase["client_cpu_pct"] = ((selfCPUSeconds() - selfBefore) / wall * 100).rounded()
        for client in clients { await client.close() }
        phases.append(phase)
        log(String(
            format: "flotilla put c=%3d: %8.1f ops/s  p50 %7.2f ms  p99 %7.2f ms  (ok %d, err %d, %d clients)%@",
            concurrency, phase["ops_per_s"] as! Double, phase["p50_ms"] as! Double, phase["p99_ms"] as! Double,
            phase["ok"] as! Int, phase["errors"] as! Int, count,
            (phase["first_error"] as? String).map { "  first error: \($0)" } ?? "")
            + "  CPU% controllers \(phase["controller_cpu_pct"]!) client \(phase["client_cpu_pct"]!)")
    }
    return ["put": phases]
}

// MARK: - Failover

/// The index (in `addresses`) of the leader, as a controller reports it; nil if none answers with one.
func leaderIndex(_ client: AdminClient, _ addresses: [String]) async -> Int? {
    guard let list = try? await client.controllerList(timeout: .seconds(2)),
          let address = list.controllers.first(where: { $0.leader })?.address else { return nil }
    return addresses.firstIndex(of: address)
}

/// True when the leader reports three voters, each at most `maxLag` entries behind, and every controller
/// answers a status call.
func settled(_ addresses: [String], _ credentials: Credentials, maxLag: UInt64 = 10) async -> Bool {
    for address in addresses {
        guard let client = try? await AdminClient.connect(to: [address], credentials: credentials, timeout: .seconds(1)) else {
            return false
        }
        let ok = (try? await client.status(timeout: .seconds(1))) != nil
        await client.close()
        if !ok { return false }
    }
    guard let client = try? await AdminClient.connect(to: addresses, credentials: credentials, timeout: .seconds(1)) else {
        return false
    }
    defer { Task { await client.close() } }
    // controllerList answers from whichever controller is connected; only the leader fills in lag.
    for _ in 0..<addresses.count {
        guard let list = try? await client.controllerList(timeout: .seconds(1)) else { return false }
        guard let leader = list.controllers.first(where: { $0.leader }) else { return false }
        if list.answeredBy == leader.id {
            return list.controllers.filter { $0.membership == "voter" }.count == addresses.count
                && list.controllers.allSatisfy { $0.lag <= maxLag }
        }
        // Ask the leader itself.
        guard let direct = try? await AdminClient.connect(to: [leader.address], credentials: credentials, timeout: .seconds(1)),
              let view = try? await direct.controllerList(timeout: .seconds(1)) else { return false }
        await direct.close()
        return view.answeredBy == leader.id
            && view.controllers.filter { $0.membership == "voter" }.count == addresses.count
            && view.controllers.allSatisfy { $0.lag <= maxLag }
    }
    return false
}

struct Success: Sendable {
    let invoked: Double
    let completed: Double
}

final class Successes: Sendable {
    private let state = Mutex<[Success]>([])
    private let calls = Atomic<Int>(0)
    func record(_ success: Success) { state.withLock { $0.append(success) } }
    func all() -> [Success] { state.withLock { $0 } }
    func call() -> Int { calls.add(1, ordering: .relaxed).newValue }
}

final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

func processName(_ pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Runs `path arguments` and waits for it; its exit status (-1 if it could not be started).
func runToCompletion(_ path: String, _ arguments: [String]) -> Int32 {
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, path, nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status >> 8) & 0xff
}

func failoverTrial(
    addresses: [String], credentials: Credentials, pidDirectory: String, restart: String, timeout: Duration,
    pre: Double = 2.0, postMax: Double = 15.0, maxCalls: Int = 200_000
) async throws -> [String: Any] {
    let probe = try await AdminClient.connect(to: addresses, credentials: credentials)
    var leader: Int?
    for _ in 0..<50 {
        leader = await leaderIndex(probe, addresses)
        if leader != nil { break }
        await sleep(seconds: 0.2)
    }
    await probe.close()
    guard let leader else { throw BenchError("no leader found before the trial") }
    let pidText = try String(contentsOfFile: "\(pidDirectory)/ctl\(leader + 1).pid", encoding: .utf8)
    guard let pid = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw BenchError("unreadable pid file for controller \(leader + 1)")
    }

    let successes = Successes()
    let stop = StopFlag()
    var writers: [AdminClient] = []
    for index in 0..<addresses.count {
        writers.append(try await AdminClient.connect(to: rotated(addresses, first: index), credentials: credentials))
    }
    let value = Data(repeating: 0x76, count: 64)
    let writerTasks = writers.enumerated().map { index, client in
        Task {
            let key = "failover/w\(index)"
            while !stop.isSet, successes.call() <= maxCalls {
                let t0 = now()
                do {
                    _ = try await client.varPut(key: key, value: value, timeout: timeout)
                    successes.record(Success(invoked: t0, completed: now()))
                } catch {
                    await sleep(seconds: 0.005)
                }
            }
        }
    }
    await sleep(seconds: pre)
    guard let name = processName(pid), name.hasPrefix("flotilla-contro") else {
        stop.set()
        for task in writerTasks { await task.value }
        throw BenchError("pid \(pid) of controller \(leader + 1) is not a flotilla-controller")
    }
    let before = successes.all().count
    let killedAt = now()
    kill(pid, SIGKILL)
    var gap: Double?
    while now() < killedAt + postMax {
        if let first = successes.all().filter({ $0.invoked > killedAt }).map(\.completed).min() {
            gap = first - killedAt
            break
        }
        await sleep(seconds: 0.01)
    }
    await sleep(seconds: 0.3)
    stop.set()
    for task in writerTasks { await task.value }
    for client in writers { await client.close() }
    let firstCompletion = successes.all().filter { $0.completed > killedAt }.map(\.completed).min().map { $0 - killedAt }

    log("  killed ctl\(leader + 1) (pid \(pid)); gap \(gap.map { String(round3($0)) } ?? "none"); restarting it")
    let after = try await AdminClient.connect(to: rotated(addresses, first: (leader + 1) % addresses.count), credentials: credentials)
    let newLeader = await leaderIndex(after, addresses)
    await after.close()

    // Restart the killed controller on its data dir, then wait until all three are back and caught up.
    // posix_spawn + waitpid: Foundation's Process.waitUntilExit can hang when called from a task on Linux.
    guard runToCompletion(restart, ["\(leader + 1)"]) == 0 else { throw BenchError("\(restart) \(leader + 1) failed") }
    let settleDeadline = now() + 30
    var isSettled = false
    while now() < settleDeadline {
        if await settled(addresses, credentials) {
            isSettled = true
            break
        }
        await sleep(seconds: 0.2)
    }
    guard isSettled else { throw BenchError("cluster not settled 30 s after restarting controller \(leader + 1)") }
    await sleep(seconds: 2.0)
    return [
        "killed": "ctl\(leader + 1)", "new_leader": newLeader.map { "ctl\($0 + 1)" } ?? NSNull(),
        "gap_s": gap.map(round3) ?? NSNull(),
        "first_completion_after_kill_s": firstCompletion.map(round3) ?? NSNull(),
        "ok_puts_before_kill": before,
    ]
}

func failover(_ arguments: Arguments) async throws -> [String: Any] {
    let addresses = try arguments.string("addresses").split(separator: ",").map(String.init)
    let credentials = try Credentials.load(from: try arguments.string("credentials"))
    let pidDirectory = try arguments.string("pid-dir")
    let restart = try arguments.string("restart")
    let trials = try arguments.int("trials", 5)
    let timeout = Duration.milliseconds(try arguments.int("timeout-ms", 300))
    var results: [[String: Any]] = []
    for trial in 1...max(trials, 1) {
        let result = try await failoverTrial(
            addresses: addresses, credentials: credentials, pidDirectory: pidDirectory, restart: restart,
            timeout: timeout)
        results.append(result)
        log("flotilla failover trial \(trial): killed \(result["killed"]!) -> leader \(result["new_leader"]!), "
            + "gap to first put invoked after kill \(result["gap_s"]!) s "
            + "(first completion after kill \(result["first_completion_after_kill_s"]!) s)")
    }
    let gaps = results.compactMap { $0["gap_s"] as? Double }.sorted()
    let median: Any = gaps.isEmpty ? NSNull()
        : round3(gaps.count % 2 == 1 ? gaps[gaps.count / 2] : (gaps[gaps.count / 2 - 1] + gaps[gaps.count / 2]) / 2)
    log("flotilla failover median gap: \(median) s over \(gaps.count) trials")
    return ["failover": results, "failover_median_s": median]
}

/// Waits (up to --timeout seconds) until all controllers answer and the leader reports every voter caught up.
func waitReady(_ arguments: Arguments) async throws -> [String: Any] {
    let addresses = try arguments.string("addresses").split(separator: ",").map(String.init)
    let credentials = try Credentials.load(from: try arguments.string("credentials"))
    let deadline = now() + (try arguments.double("timeout", 120))
    while now() < deadline {
        if await settled(addresses, credentials) { return ["ready": true, "seconds": round2(now())] }
        await sleep(seconds: 0.25)
    }
    throw BenchError("the cluster at \(addresses.joined(separator: ",")) was not ready within the timeout")
}

// MARK: - Main

do {
    let arguments = try Arguments(CommandLine.arguments)
    let result: [String: Any]
    switch arguments.command {
    case "load": result = try await load(arguments)
    case "failover": result = try await failover(arguments)
    case "wait-ready": result = try await waitReady(arguments)
    case "placements": result = try await placements(arguments)
    default: throw BenchError("unknown command \(arguments.command); use load, failover, wait-ready or placements")
    }
    let json = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
    if let path = arguments.values["json"] {
        try json.write(to: URL(fileURLWithPath: path))
    } else {
        FileHandle.standardOutput.write(json + Data("\n".utf8))
    }
} catch {
    log("raft-bench: \(error)")
    exit(1)
}

// The measurement loops. Every loop is bounded by a deadline and by a call count, and stops by itself.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Wire

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What the harness needs from each RPC system: the two echo calls, over one connection.
protocol EchoTarget: Sendable {
    var name: String { get }
    /// Unary Echo/Echo; returns the size of the echoed payload.
    func unary(_ request: Flotilla_V1_EchoRequest) async throws -> Int
    /// Server-streaming Echo/Expand, read to the end; returns messages and payload bytes received.
    func expand(_ request: Flotilla_V1_EchoRequest) async throws -> (messages: Int, bytes: Int)
}

/// Monotonic nanoseconds.
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// CPU time (user + system) of this process, in seconds.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    #if os(Linux)
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    #else
    getrusage(RUSAGE_SELF, &usage)
    #endif
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU time (user + system) of another process, from /proc/<pid>/stat, in seconds (clock-tick resolution).
func processCPUSeconds(pid: Int32) -> Double {
    #if os(Linux)
    guard let line = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return .nan }
    // Fields after "(comm)": state is field 3, utime field 14, stime field 15.
    guard let close = line.lastIndex(of: ")") else { return .nan }
    let rest = line[line.index(after: close)...].split(separator: " ")
    guard rest.count > 12, let utime = Double(rest[11]), let stime = Double(rest[12]) else { return .nan }
    return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    #else
    return .nan
    #endif
}

struct UnaryResult: Sendable {
    var calls: Int
    var seconds: Double
    /// Every call's latency, in nanoseconds, sorted.
    var latencies: [UInt64]
    var clientCPU: Double
    var serverCPU: Double

    var callsPerSecond: Double { Double(calls) / seconds }
    /// Nearest-rank percentile (exact: every latency is kept).
    func percentile(_ p: Double) -> Double {
        guard !latencies.isEmpty else { return .nan }
        let rank = Int((p / 100 * Double(latencies.count)).rounded(.up))
        return Double(latencies[min(max(rank, 1), latencies.count) - 1])
    }
}

struct StreamResult: Sendable {
    var calls: Int
    var messages: Int
    var bytes: Int
    var seconds: Double
    var clientCPU: Double
    var serverCPU: Double

    var megabytesPerSecond: Double { Double(bytes) / seconds / 1e6 }
    var messagesPerSecond: Double { Double(messages) / seconds }
}

/// `concurrency` workers, each making unary calls back to back on the shared connection until the deadline
/// (or `maxCalls` in all). Latency of every call is kept.
func runUnary<T: EchoTarget>(
    _ target: T, payload: Int, concurrency: Int, duration: Double, maxCalls: Int = 20_000_000
) async throws -> (calls: Int, seconds: Double, latencies: [UInt64]) {
    var request = Flotilla_V1_EchoRequest()
    request.payload = Data(repeating: 0x5A, count: payload)
    let req = request
    let perWorker = max(1, maxCalls / concurrency)
    let start = monotonicNanos()
    let deadline = start + UInt64(duration * 1e9)
    let all = try await withThrowingTaskGroup(of: [UInt64].self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var latencies: [UInt64] = []
                latencies.reserveCapacity(min(perWorker, 1 << 16))
                while latencies.count < perWorker {
                    let before = monotonicNanos()
                    if before >= deadline { break }
                    let echoed = try await target.unary(req)
                    let after = monotonicNanos()
                    guard echoed == payload else { throw BenchError("\(target.name): echoed \(echoed) bytes, sent \(payload)") }
                    latencies.append(after - before)
                }
                return latencies
            }
        }
        var all: [UInt64] = []
        for try await latencies in group { all.append(contentsOf: latencies) }
        return all
    }
    let seconds = Double(monotonicNanos() - start) / 1e9
    return (all.count, seconds, all.sorted())
}

/// One Expand call at a time, each streaming `repeat` messages of `messageSize` bytes, until the deadline
/// (or `maxCalls`).
func runStream<T: EchoTarget>(
    _ target: T, messageSize: Int, repeat count: Int, duration: Double, maxCalls: Int = 1_000_000
) async throws -> (calls: Int, messages: Int, bytes: Int, seconds: Double) {
    var request = Flotilla_V1_EchoRequest()
    request.payload = Data(repeating: 0xA5, count: messageSize)
    request.repeat = UInt32(count)
    let start = monotonicNanos()
    let deadline = start + UInt64(duration * 1e9)
    var calls = 0, messages = 0, bytes = 0
    while calls < maxCalls, monotonicNanos() < deadline {
        let (m, b) = try await target.expand(request)
        guard m == count, b == count * messageSize else {
            throw BenchError("\(target.name): Expand returned \(m) messages / \(b) bytes, expected \(count) / \(count * messageSize)")
        }
        calls += 1
        messages += m
        bytes += b
    }
    return (calls, messages, bytes, Double(monotonicNanos() - start) / 1e9)
}

struct BenchSettings: Sendable {
    var duration = 10.0
    var warmup = 2.0
    var rounds = 1
    var payload = 64
    var concurrencies = [1, 64]
    var streamMessage = 16 << 10
    var streamRepeat = 1024
    /// grpc-swift-nio-transport's default coalesces flushes (up to 100 µs or 64 KiB) on client and server;
    /// `off` turns that off on both sides.
    var grpcFlushCoalescing = true
    /// Measure one system only (for profiling): "Flotilla" or "grpc-swift-2".
    var only: String?
}

/// Warm-up, then the measured run, with CPU time of client and server over the measured run only.
func measureUnary<T: EchoTarget>(
    _ target: T, serverPID: Int32, settings: BenchSettings, concurrency: Int
) async throws -> UnaryResult {
    _ = try await runUnary(target, payload: settings.payload, concurrency: concurrency, duration: settings.warmup)
    let client0 = ownCPUSeconds(), server0 = processCPUSeconds(pid: serverPID)
    let run = try await runUnary(target, payload: settings.payload, concurrency: concurrency, duration: settings.duration)
    let client1 = ownCPUSeconds(), server1 = processCPUSeconds(pid: serverPID)
    return UnaryResult(
        calls: run.calls, seconds: run.seconds, latencies: run.latencies,
        clientCPU: client1 - client0, serverCPU: server1 - server0)
}

func measureStream<T: EchoTarget>(_ target: T, serverPID: Int32, settings: BenchSettings) async throws -> StreamResult {
    _ = try await runStream(target, messageSize: settings.streamMessage, repeat: settings.streamRepeat, duration: settings.warmup)
    let client0 = ownCPUSeconds(), server0 = processCPUSeconds(pid: serverPID)
    let run = try await runStream(target, messageSize: settings.streamMessage, repeat: settings.streamRepeat, duration: settings.duration)
    let client1 = ownCPUSeconds(), server1 = processCPUSeconds(pid: serverPID)
    return StreamResult(
        calls: run.calls, messages: run.messages, bytes: run.bytes, seconds: run.seconds,
        clientCPU: client1 - client0, serverCPU: server1 - server0)
}

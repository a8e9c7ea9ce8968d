// rpc-bench: Flotilla's RPC protocol vs grpc-swift-2, unary echo and server streaming over mutual TLS on
// loopback. Each server runs in its own child process; this process is the client of both.
//
//   rpc-bench run [--duration S] [--warmup S] [--rounds N] [--payload BYTES] [--concurrency 1,64|none]
//                 [--stream-message BYTES] [--stream-repeat N] [--grpc-flush-coalescing default|off]
//                 [--only Flotilla|grpc-swift-2]   (one system only, for profiling)
//   rpc-bench serve-flotilla --credentials PEM [--max-seconds S]   (started by `run`)
//   rpc-bench serve-grpc     --credentials PEM [--max-seconds S]   (started by `run`)
import ClusterModel
import Foundation
import PKI

@main
struct RPCBench {
    static func main() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        let command = arguments.isEmpty ? "run" : arguments.removeFirst()
        let args = arguments
        func option(_ name: String) -> String? {
            guard let index = args.firstIndex(of: name), index + 1 < args.count else { return nil }
            return args[index + 1]
        }

        do {
            switch command {
            case "serve-flotilla", "serve-grpc":
                guard let path = option("--credentials") else { fail("\(command) needs --credentials PATH") }
                let maxSeconds = Double(option("--max-seconds") ?? "") ?? 3600
                let credentials = try Credentials.load(from: path)
                let ready: @Sendable (Int) -> Void = { port in FileHandle.standardOutput.write(Data("PORT \(port)\n".utf8)) }
                let stop: @Sendable () async -> Void = { await waitForStdinEOF(maxSeconds: maxSeconds) }
                if command == "serve-flotilla" {
                    try await FlotillaSide.serve(credentials: credentials, ready: ready, until: stop)
                } else {
                    try await GRPCSide.serve(
                        credentials: credentials, flushCoalescing: option("--grpc-flush-coalescing") != "off",
                        ready: ready, until: stop)
                }

            case "run":
                var settings = BenchSettings()
                if let v = option("--duration") { settings.duration = Double(v) ?? settings.duration }
                if let v = option("--warmup") { settings.warmup = Double(v) ?? settings.warmup }
                if let v = option("--rounds") { settings.rounds = max(1, Int(v) ?? settings.rounds) }
                if let v = option("--payload") { settings.payload = Int(v) ?? settings.payload }
                if let v = option("--concurrency") {
                    settings.concurrencies = v.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
                }
                if let v = option("--stream-message") { settings.streamMessage = Int(v) ?? settings.streamMessage }
                if let v = option("--stream-repeat") { settings.streamRepeat = Int(v) ?? settings.streamRepeat }
                if let v = option("--only") { settings.only = v }
                if let v = option("--grpc-flush-coalescing") { settings.grpcFlushCoalescing = v != "off" }
                try await runBenchmark(settings)

            default:
                fail("unknown command \(command); use run, serve-flotilla or serve-grpc")
            }
        } catch {
            fail("\(error)")
        }
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("rpc-bench: \(message)\n".utf8))
    exit(1)
}

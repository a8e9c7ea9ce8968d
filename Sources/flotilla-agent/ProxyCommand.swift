import ArgumentParser
import Balancing
import Foundation
import LoadBalancer
import Logging
import MetricsEndpoint
import Prometheus
import ServiceFiles
import Yams

/// `flotilla-agent proxy`: the node's load balancer on its own, from flags or a YAML file.
struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Run Flotilla's load balancer on its own, in front of a fixed list of backends.",
        discussion: """
            Example: flotilla-agent proxy --listen 0.0.0.0:8080 --backend 10.0.0.1:80 --backend 10.0.0.2:80@3 --mode http
            A backend is HOST:PORT, optionally @WEIGHT (0-256; 0 takes no new connections); --backend also takes a
            comma-separated list. --config FILE reads the same settings from YAML (flags given as well win):
              listen: 0.0.0.0:8080
              mode: http              # tcp or http
              policy: least-conn      # round-robin, least-conn, ip-hash, random, p2c
              workers: 2
              retries: 2
              connect_timeout: 2s
              idle_timeout: 5m
              request_timeout: 30s
              proxy_protocol: false
              max_connections: 0      # per backend, 0 = unlimited
              slow_start: 0s
              backends: [10.0.0.1:80, "10.0.0.2:80@3"]
              metrics_address: 127.0.0.1:9466   # or off (the default)
            Stops on SIGTERM or SIGINT, printing its statistics.
            """)

    @Option(help: ArgumentHelp("Where to accept connections.", valueName: "host:port")) var listen: String?
    @Option(name: .customLong("backend"), help: ArgumentHelp("A backend (repeatable, or comma-separated).", valueName: "host:port[@weight]"))
    var backends: [String] = []
    @Option(help: ArgumentHelp("tcp (bytes, a backend per connection) or http (HTTP/1.1, a backend per request).", valueName: "mode"))
    var mode: String?
    @Option(help: ArgumentHelp("round-robin, least-conn, ip-hash, random or p2c.", valueName: "policy")) var policy: String?
    @Option(help: ArgumentHelp("Event-loop threads (default 1).", valueName: "n")) var workers: Int?
    @Option(help: ArgumentHelp("Other backends tried after a failure (default 2).", valueName: "n")) var retries: Int?
    @Option(name: .customLong("connect-timeout"), help: ArgumentHelp("Per backend connection attempt (default 2s).", valueName: "duration"))
    var connectTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close connections idle this long (default 5m).", valueName: "duration"))
    var idleTimeout: String?
    @Option(name: .customLong("request-timeout"), help: ArgumentHelp("HTTP: a backend must start answering within this (default 30s).", valueName: "duration"))
    var requestTimeout: String?
    @Flag(name: .customLong("proxy-protocol"), help: "Send a PROXY protocol v2 header to backends (they see the client's address).")
    var proxyProtocol = false
    @Option(name: .customLong("max-conns"), help: ArgumentHelp("Connections per backend at most (default 0 = unlimited).", valueName: "n"))
    var maxConnections: Int?
    @Option(name: .customLong("slow-start"), help: ArgumentHelp("Ramp a new or returning backend's share up over this (default 0s).", valueName: "duration"))
    var slowStart: String?
    @Option(name: .customLong("metrics-address"), help: ArgumentHelp(
        "Serve Prometheus metrics (GET /metrics, plain HTTP) here; off (the default) serves none.", valueName: "host:port|off"))
    var metricsAddress: String?
    @Option(help: ArgumentHelp("Settings from a YAML file (flags win).", valueName: "file")) var config: String?

    func run() async throws {
        let proxyConfig = try makeConfig()
        let metricsAt = try metricsEndpointAddress()
        let proxy: StandaloneProxy
        do {
            proxy = try await StandaloneProxy.start(proxyConfig)
        } catch {
            throw CleanError("\(error)")
        }
        let backendList = proxyConfig.backends.map { "\($0.host):\($0.port)" }.joined(separator: ", ")
        print("flotilla proxy: \(proxyConfig.settings.mode.rawValue) on \(proxyConfig.listen) (port \(proxy.port)), "
              + "\(proxyConfig.settings.policy.rawValue) over \(backendList), \(proxyConfig.workers) worker(s)")
        let exposition = MetricsExposition(registry: PrometheusCollectorRegistry(), collectors: [LoadBalancerMetrics.collector(proxy)])
        try await withTaskCancellationOnSignals {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await MetricsEndpoint.serve(at: metricsAt, exposition: exposition, logger: Logger(label: "flotilla.proxy")) }
                group.addTask { while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) } }
                await group.next()
                group.cancelAll()
            }
        }
        if let stats = try? await proxy.stats() { print(StatsText.render(stats)) }
        await proxy.stop()
    }

    func makeConfig() throws -> StandaloneProxyConfig {
        var file = ProxyFileSettings()
        if let config {
            guard let text = try? String(contentsOfFile: config, encoding: .utf8) else {
                throw ValidationError("cannot read --config \(config)")
            }
            file = try ProxyFileSettings.parse(text, path: config)
        }
        guard let listen = listen ?? file.listen else { throw ValidationError("give --listen HOST:PORT (or listen: in --config)") }
        let backendTexts = backends.isEmpty ? file.backends : backends.flatMap { $0.split(separator: ",").map(String.init) }
        guard !backendTexts.isEmpty else { throw ValidationError("give at least one --backend HOST:PORT (or backends: in --config)") }
        var settings = ProxySettings()
        let modeName = mode ?? file.mode ?? "tcp"
        guard let parsedMode = ProxyMode(named: modeName) else { throw ValidationError("--mode \(modeName): use tcp or http") }
        settings.mode = parsedMode
        let policyName = policy ?? file.policy ?? "round-robin"
        guard let parsedPolicy = BalancingPolicy(named: policyName) else {
            throw ValidationError("--policy \(policyName): use round-robin, least-conn, ip-hash, random or p2c")
        }
        settings.policy = parsedPolicy
        if let retries = retries ?? file.retries {
            guard (0...10).contains(retries) else { throw ValidationError("--retries \(retries): use 0 to 10") }
            settings.retries = retries
        }
        if let text = connectTimeout ?? file.connectTimeout { settings.connectTimeoutMillis = try Self.millis(text, "--connect-timeout") }
        if let text = idleTimeout ?? file.idleTimeout { settings.idleTimeoutMillis = try Self.millis(text, "--idle-timeout") }
        if let text = requestTimeout ?? file.requestTimeout { settings.requestTimeoutMillis = try Self.millis(text, "--request-timeout") }
        if let text = slowStart ?? file.slowStart { settings.balancing.slowStartMillis = UInt64(try Self.millis(text, "--slow-start")) }
        settings.proxyProtocol = proxyProtocol || (file.proxyProtocol ?? false)
        let limit = maxConnections ?? file.maxConnections ?? 0
        guard limit >= 0 else { throw ValidationError("--max-conns \(limit): use 0 (unlimited) or more") }
        let parsedBackends = try backendTexts.map { text -> Backend in
            var address = text.trimmingCharacters(in: .whitespaces)
            var weight: UInt32 = 1
            if let at = address.lastIndex(of: "@") {
                guard let parsed = UInt32(address[address.index(after: at)...]) else {
                    throw ValidationError("backend \(text): the weight after @ must be a number from 0 to 256")
                }
                weight = parsed
                address = String(address[..<at])
            }
            do {
                var backend = try StandaloneProxyConfig.backend(address, weight: weight)
                backend.maxConnections = limit
                return backend
            } catch {
                throw ValidationError("\(error)")
            }
        }
        let threads = workers ?? file.workers ?? 1
        guard (1...64).contains(threads) else { throw ValidationError("--workers \(threads): use 1 to 64") }
        return StandaloneProxyConfig(listen: listen, backends: parsedBackends, settings: settings, workers: threads)
    }

    /// Where to serve /metrics: the flag, else the file's `metrics_address`, else off.
    func metricsEndpointAddress() throws -> MetricsAddress {
        var fileAddress: String?
        if let config, let text = try? String(contentsOfFile: config, encoding: .utf8) {
            fileAddress = try ProxyFileSettings.parse(text, path: config).metricsAddress
        }
        let text = metricsAddress ?? fileAddress ?? "off"
        guard let address = MetricsAddress(parsing: text) else {
            throw ValidationError("--metrics-address \(text) is not host:port (e.g. 127.0.0.1:9466) or off")
        }
        return address
    }

    static func millis(_ text: String, _ flag: String) throws -> Int64 {
        guard let value = ServiceFile.milliseconds(text) else { throw ValidationError("\(flag) \(text) is not a duration (e.g. 500ms, 5s, 1m)") }
        return Int64(value)
    }
}

/// The YAML form of the proxy's settings (every key checked: a typo is an error, not a silent default).
struct ProxyFileSettings {
    var listen: String?
    var mode: String?
    var policy: String?
    var workers: Int?
    var retries: Int?
    var connectTimeout: String?
    var idleTimeout: String?
    var requestTimeout: String?
    var proxyProtocol: Bool?
    var maxConnections: Int?
    var slowStart: String?
    var metricsAddress: String?
    var backends: [String] = []

    static let keys: Set<String> = ["listen", "mode", "policy", "workers", "retries", "connect_timeout", "idle_timeout",
                                    "request_timeout", "proxy_protocol", "max_connections", "slow_start", "backends",
                                    "metrics_address"]

    static func parse(_ text: String, path: String) throws -> ProxyFileSettings {
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw ValidationError("\(path) is not valid YAML: \(error)")
        }
        guard let map = loaded as? [String: Any] else { throw ValidationError("\(path): expected a mapping of settings (listen:, backends:, ...)") }
        if let unknown = map.keys.filter({ !keys.contains($0) }).sorted().first {
            throw ValidationError("\(path): unknown key '\(unknown)' (known: \(keys.sorted().joined(separator: ", ")))")
        }
        func string(_ key: String) throws -> String? {
            guard let value = map[key] else { return nil }
            if let text = value as? String { return text }
            if let number = value as? Int { return String(number) }
            throw ValidationError("\(path): \(key) must be text")
        }
        func int(_ key: String) throws -> Int? {
            guard let value = map[key] else { return nil }
            guard let number = value as? Int else { throw ValidationError("\(path): \(key) must be a whole number") }
            return number
        }
        var settings = ProxyFileSettings()
        settings.listen = try string("listen")
        settings.mode = try string("mode")
        settings.policy = try string("policy")
        settings.workers = try int("workers")
        settings.retries = try int("retries")
        settings.connectTimeout = try string("connect_timeout")
        settings.idleTimeout = try string("idle_timeout")
        settings.requestTimeout = try string("request_timeout")
        settings.slowStart = try string("slow_start")
        settings.maxConnections = try int("max_connections")
        settings.metricsAddress = try string("metrics_address")
        if let value = map["proxy_protocol"] {
            guard let flag = value as? Bool else { throw ValidationError("\(path): proxy_protocol must be true or false") }
            settings.proxyProtocol = flag
        }
        if let value = map["backends"] {
            guard let list = value as? [Any] else { throw ValidationError("\(path): backends must be a list of HOST:PORT[@WEIGHT]") }
            settings.backends = try list.map { item in
                guard let text = item as? String else { throw ValidationError("\(path): backend \(item) must be text HOST:PORT[@WEIGHT]") }
                return text
            }
        }
        return settings
    }
}

/// Statistics as a table, for the standalone proxy's exit.
enum StatsText {
    static func render(_ stats: ServiceStats) -> String {
        var lines = ["\(stats.service) (\(stats.mode), \(stats.policy)): \(stats.rejected) rejected"]
        lines.append("BACKEND                 WEIGHT  ACTIVE  CONNS    REQUESTS  ERRORS  RETRIES  EJECTIONS  IN        OUT       P50      P99")
        for backend in stats.backends {
            func ms(_ micros: UInt64?) -> String {
                guard let micros else { return "-" }
                return micros == UInt64.max ? ">10s" : String(format: "%.1fms", Double(micros) / 1000)
            }
            let cells: [(String, Int)] = [
                (backend.address, 23), (String(backend.weight), 7), (String(backend.active), 7),
                (String(backend.connections), 8), (String(backend.requests), 9), (String(backend.errors), 7),
                (String(backend.retries), 8), (String(backend.ejections), 10), (String(backend.bytesIn), 9),
                (String(backend.bytesOut), 9), (ms(backend.latency.quantileMicros(0.5)), 8),
            ]
            let padded: [String] = cells.map { cell in cell.0.padding(toLength: max(cell.1, cell.0.count), withPad: " ", startingAt: 0) }
            lines.append((padded + [ms(backend.latency.quantileMicros(0.99))]).joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

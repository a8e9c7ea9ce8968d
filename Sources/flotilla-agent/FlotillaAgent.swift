public import ArgumentParser
import Agent
import ContainerRuntime
import ClusterModel
import Foundation
public import Logging
import Metrics
import MetricsEndpoint
import PKI
import Prometheus
import Transport
import Wire

@main
struct FlotillaAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-agent",
        abstract: "A Flotilla agent (the default: `flotilla-agent --data-dir …` is `flotilla-agent run --data-dir …`), or the load balancer on its own.",
        version: FlotillaVersion.current,
        subcommands: [RunAgent.self, ProxyCommand.self],
        defaultSubcommand: RunAgent.self)
}

struct RunAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a Flotilla agent: joins the cluster and keeps a session with its leader.",
        discussion: """
            First start: --controller and --token (an agent token from `flotilla token create --role agent`, or \
            the one the first controller's --init printed). The agent makes its key here, proves the cluster is \
            the one the token pins, and stores its certificate in --data-dir. Later starts reuse that identity \
            without a token. Running containers and the node's load balancer arrive with later releases.
            """,
        version: FlotillaVersion.current)

    @Option(name: .customLong("data-dir"), help: "Directory for the agent's identity and state.")
    var dataDirectory: String

    @Option(help: ArgumentHelp("Controllers to reach (host:port, comma-separated).", valueName: "host:port,..."))
    var controller: String?

    @Option(help: ArgumentHelp("An agent join token, for the first start.", valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("This node's name (default: the host name).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("Node labels, e.g. zone=a,disk=ssd.", valueName: "k=v,..."))
    var labels: String?

    @Option(name: .customLong("advertise-ip"), help: ArgumentHelp("The IP other nodes reach this one on (default: as the controller sees it).", valueName: "ip"))
    var advertiseIP: String?

    @Option(help: ArgumentHelp("The OCI runtime for --driver oci tasks: crun or runc (default: detect; crun preferred).", valueName: "name"))
    var runtime: String?

    @Option(name: .customLong("run-dir"), help: ArgumentHelp("Where the OCI runtime keeps container state (a tmpfs).", valueName: "dir"))
    var runDirectory = "/run"

    @Option(name: .customLong("insecure-registry"), help: ArgumentHelp(
        "A registry reached over plain HTTP instead of HTTPS, as image references write it (repeatable).", valueName: "host:port"))
    var insecureRegistries: [String] = []

    @Option(name: .customLong("registry-ca"), help: ArgumentHelp(
        "A PEM file of CA certificates trusted for registries beside the system's (a private registry's CA).", valueName: "file"))
    var registryCA: String?

    @Option(name: .customLong("log-max-size"), help: ArgumentHelp("A task's log file is rotated at this size (e.g. 10M, 512K).", valueName: "size"))
    var logMaxSize = "10M"

    @Option(name: .customLong("log-max-files"), help: ArgumentHelp("Rotated log files kept per task.", valueName: "n"))
    var logMaxFiles = 3

    @Flag(name: .customLong("stop-tasks-on-exit"), help: "Stop the node's containers when the agent stops (by default they keep running, and the next agent process adopts them).")
    var stopTasksOnExit = false

    @Option(name: .customLong("lb-workers"), help: ArgumentHelp("Threads forwarding the load balancer's traffic.", valueName: "n"))
    var loadBalancerWorkers = min(2, ProcessInfo.processInfo.activeProcessorCount)

    @Option(name: .customLong("lb-address"), help: ArgumentHelp("Where the load balancer accepts services' published ports (default: every address).", valueName: "ip"))
    var loadBalancerAddress = "0.0.0.0"

    @Option(name: .customLong("metrics-address"), help: ArgumentHelp(
        "Where to serve Prometheus metrics over plain HTTP (GET /metrics), or off.", valueName: "host:port|off"))
    var metricsAddress = "127.0.0.1:9465"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    /// The agent is stopping. Containers keep running for the next agent process to adopt (with their network),
    /// unless --stop-tasks-on-exit; process-driver tasks stop.
    func shutDown(worker: TaskWorker, oci: OCIDriver?, logs: TaskLogs, nodeID: String) async {
        if stopTasksOnExit || oci == nil {
            await worker.stopAll()
        } else {
            await worker.release(keepingRuntimes: ["oci"])
        }
        if oci?.runningContainers == 0 { await oci?.networking?.tearDown() }
        await logs.shutdown()
        oci?.releaseState()
        // The node's cgroup parent, once nothing runs in it (containers left for the next agent keep it).
        for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            rmdir("/sys/fs/cgroup/\(hierarchy)/flotilla-\(nodeID)")
        }
    }

    /// "10M", "512K", "1G", "4096" → bytes; nil when malformed or zero.
    static func bytes(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        let (digits, scale) = text.last.flatMap { units[Character($0.uppercased())] }.map { (text.dropLast(), $0) } ?? (Substring(text), 1)
        guard let value = Int(digits), value > 0 else { return nil }
        return value * scale
    }

    var controllers: [String] {
        (controller ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func parsedLabels() throws -> [String: String] {
        var result: [String: String] = [:]
        for pair in (labels ?? "").split(separator: ",") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--labels: '\(pair)' is not key=value") }
            result[String(parts[0])] = String(parts[1])
        }
        return result
    }

    func validate() throws {
        for address in controllers where HostPort.parse(address) == nil {
            throw ValidationError("--controller address '\(address)' is not host:port")
        }
        _ = try parsedLabels()
        guard Self.bytes(logMaxSize) != nil else { throw ValidationError("--log-max-size \(logMaxSize) is not a size (e.g. 10M, 512K)") }
        guard logMaxFiles >= 0 else { throw ValidationError("--log-max-files must be 0 or more") }
        guard MetricsAddress(parsing: metricsAddress) != nil else {
            throw ValidationError("--metrics-address \(metricsAddress) is not host:port (e.g. 127.0.0.1:9465) or off")
        }
    }

    func run() async throws {
        ProcessLogging.bootstrap(level: logLevel)
        let logger = Logger(label: "flotilla.agent")
        let registry = PrometheusCollectorRegistry()
        let metricsFactory = FlotillaMetrics.factory(registry: registry)
        MetricsSystem.bootstrap(metricsFactory)
        let directory = AgentDataDirectory(path: dataDirectory)
        do {
            let credentials: Credentials
            if directory.hasJoined {
                credentials = try directory.loadCredentials()
            } else {
                guard let token else {
                    throw CleanError("\(dataDirectory) holds no agent identity yet: pass --controller and --token to join (an agent token from `flotilla token create --role agent`)")
                }
                guard !controllers.isEmpty else { throw CleanError("joining needs --controller host:port of at least one controller") }
                let parsed = try JoinToken(parsing: token)
                let request = NodeJoiner.Request(
                    role: .agent, name: name ?? Self.hostName(), labels: try parsedLabels(), advertiseAddress: advertiseIP ?? "",
                    version: FlotillaVersion.current)
                credentials = try await NodeJoiner.join(controllers: controllers, token: parsed, request: request, logger: logger)
                try directory.saveCredentials(credentials)
                directory.saveControllers(controllers)
                FileHandle.standardOutput.write(Data("Joined cluster \(credentials.clusterID) as node \(credentials.identity.nodeID).\n".utf8))
            }
            let known = controllers + directory.knownControllers().filter { !controllers.contains($0) }
            guard !known.isEmpty else { throw CleanError("no controller to reach: pass --controller host:port") }
            let identity = AgentIdentity(credentials)
            var runtimes: [any ContainerRuntime] = []
            if let registryCA, !FileManager.default.isReadableFile(atPath: registryCA) {
                throw CleanError("--registry-ca \(registryCA): no readable file there")
            }
            var oci: OCIDriver?
            // Process-driver tasks in cgroups of their own, with their limits, beside the containers'.
            runtimes.append(ProcessDriver(cgroupParent: getuid() == 0 ? "flotilla-\(credentials.identity.nodeID.rawValue)" : nil))
            switch OCIRuntimeSetup.make(
                preferred: runtime, dataDirectory: dataDirectory, nodeID: credentials.identity.nodeID.rawValue, runDirectory: runDirectory,
                registries: RegistryConfiguration(insecureRegistries: Set(insecureRegistries), additionalCAFile: registryCA)
            ) {
            case .success(let driver):
                runtimes.append(driver)
                oci = driver
                logger.info("OCI driver ready", metadata: ["runtime": "\(driver.runtime.name)", "why": "\(driver.runtime.reason)"])
            case .failure(let why):
                if runtime != nil { throw CleanError("--runtime \(runtime!): \(why)") }
                logger.warning("OCI driver unavailable; only --driver process tasks will run here", metadata: ["reason": "\(why)"])
            }
            var logConfiguration = TaskLogConfiguration(directory: dataDirectory + "/logs")
            logConfiguration.maxFileBytes = Self.bytes(logMaxSize) ?? logConfiguration.maxFileBytes
            logConfiguration.rotatedFiles = logMaxFiles
            let logs = try TaskLogs(configuration: logConfiguration, logger: logger)
            // Containers an earlier agent process left running are adopted when their assignments arrive (their
            // logs keep going to the same files); what else the last process captured is finished.
            let recovered = await oci?.recover() ?? []
            if !recovered.isEmpty {
                logger.info("containers left running by the previous agent process", metadata: ["tasks": "\(recovered)"])
            }
            await logs.sweep(keeping: Set(recovered))
            let networking = oci?.networking
            let ociDriver = oci
            guard (1...64).contains(loadBalancerWorkers) else { throw CleanError("--lb-workers \(loadBalancerWorkers): use 1 to 64") }
            let namespacePrefix = NodeNetwork.prefix(for: credentials.identity.nodeID)
            let balancer = await AgentLoadBalancer.start(workers: loadBalancerWorkers, meshHost: loadBalancerAddress, logger: logger)
            let worker = TaskWorker(logger: logger, runtimes: runtimes, onNetwork: { update in
                do {
                    try await networking?.configure(update)
                    logger.info("container network configured", metadata: ["subnet": "\(update.subnet)", "routes": "\(update.routes.count)"])
                } catch {
                    logger.error("container network not configured; tasks on their own network will fail to start", metadata: ["error": "\(error)"])
                }
            }, beforeStop: balancer.drainBeforeStop(namespace: { task in
                networking == nil ? nil : "/run/netns/" + namespacePrefix + "-" + task
            }), logs: logs, metrics: metricsFactory)
            let session = AgentSession(
                identity: identity, controllers: known, directory: directory, worker: worker,
                logs: LogPublisher(logs: logs, logger: logger), tables: balancer.receiver,
                balancerStats: balancer.statsSource, wakes: balancer.wakeSource, logger: logger)
            let metricsAt = MetricsAddress(parsing: metricsAddress) ?? .off
            let exposition = MetricsExposition(registry: registry, collectors: [LoadBalancerMetrics.collector(balancer.balancer)])
            let renewer = CertificateRenewer(identity: identity, directory: directory, controllers: { session.controllers }, logger: logger)
            logger.info("agent running", metadata: ["node.id": "\(credentials.identity.nodeID)", "controllers": "\(known.joined(separator: ","))"])
            do {
                try await withTaskCancellationOnSignals {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { await renewer.run() }
                        group.addTask { try await session.run() }
                        group.addTask { await balancer.runDNS(networking: networking) }
                        group.addTask { await MetricsEndpoint.serve(at: metricsAt, exposition: exposition, logger: logger) }
                        if let driver = ociDriver {
                            // Images no task used for a day go, every 10 minutes (the first pass a minute in).
                            group.addTask {
                                var wait = Duration.seconds(60)
                                while !Task.isCancelled {
                                    try await Task.sleep(for: wait)
                                    wait = .seconds(600)
                                    do {
                                        let removed = try driver.collectImageGarbage()
                                        if !removed.isEmpty { logger.info("unused images removed", metadata: ["images": "\(removed.map(\.reference))"]) }
                                    } catch {
                                        logger.warning("image garbage collection failed", metadata: ["error": "\(error)"])
                                    }
                                }
                            }
                        }
                        // The session ends only when the node was removed (or on a signal): stop renewing too.
                        try await group.next()
                        group.cancelAll()
                    }
                }
            } catch {
                await balancer.shutdown()
                await shutDown(worker: worker, oci: ociDriver, logs: logs, nodeID: credentials.identity.nodeID.rawValue)
                throw error
            }
            await balancer.shutdown()
            await shutDown(worker: worker, oci: ociDriver, logs: logs, nodeID: credentials.identity.nodeID.rawValue)
        } catch let error as RPCError {
            throw CleanError("joining failed: \(error.message)")
        } catch let error as PKIError {
            throw CleanError(error.message)
        } catch let error as AgentSession.Ending {
            throw CleanError(error.description)
        }
    }

    static func hostName() -> String {
        let name = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "node"
        return name.isEmpty ? "node" : name
    }
}

/// Runs `body` until it returns or SIGTERM/SIGINT arrives (then cancels it and returns).
func withTaskCancellationOnSignals(_ body: @escaping @Sendable () async throws -> Void) async throws {
    let signals = [SIGTERM, SIGINT]
    for signal in signals { Foundation.signal(signal, SIG_IGN) }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await body() }
        let sources = signals.map { DispatchSource.makeSignalSource(signal: $0) }
        let stream = AsyncStream<Void> { continuation in
            for source in sources {
                source.setEventHandler { continuation.yield() }
                source.resume()
            }
        }
        group.addTask {
            for await _ in stream { return }
        }
        try await group.next()
        group.cancelAll()
        for source in sources { source.cancel() }
    }
}

/// An error whose message is the whole story: printed as "Error: <message>", exit status 1.
struct CleanError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

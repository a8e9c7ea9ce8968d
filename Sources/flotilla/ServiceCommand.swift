import AdminClient
import ArgumentParser
import ClusterStore
import Foundation
import ServiceFiles
import SwiftProtobuf
import Wire

/// `flotilla service …`: services and their tasks.
struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Create, list, inspect, scale, update, roll back and remove services.",
        discussion: """
            A service is desired state: what to run, how many, where, on which ports. The leader turns it into \
            tasks placed on nodes and keeps it so when nodes fail. `create`, `update`, `scale` and `rollback` \
            wait until the service has converged (every task running), showing progress, unless --detach.
            """,
        subcommands: [Create.self, List.self, Ps.self, Logs.self, Inspect.self, Scale.self, Autoscale.self, Update.self, Rollback.self, Remove.self])

    /// Flags that describe a spec; `create` takes them as the whole spec, `update` changes only those given.
    struct SpecOptions: ParsableArguments {
        @Option(help: "oci (containers) or process (a command on the host).") var driver: String?
        @Option(help: ArgumentHelp(
            "The image (oci driver): HOST[:PORT]/NAME[:TAG] or HOST[:PORT]/NAME@sha256:HEX from a registry, oci:PATH[:TAG] (an OCI image layout), or oci-archive:FILE[:TAG].",
            valueName: "reference")) var image: String?
        @Option(help: "The command (process: a shell command line, $PORT is the first port).") var command: String?
        @Option(name: .customLong("arg"), help: "An argument after the command (repeatable).") var args: [String] = []
        @Option(name: .customLong("env"), help: "An environment variable, KEY=VALUE (repeatable).") var env: [String] = []
        @Option(help: "replicated or global.") var mode: String?
        @Option(help: "How many tasks (replicated).") var replicas: UInt32?
        @Option(name: .customLong("publish"), help: ArgumentHelp("A port: PUBLISHED:TARGET[/tcp|http][,mode=host] or TARGET[/tcp|http] (repeatable). mode=host binds the published port on the task's node instead of every node's load balancer.", valueName: "port")) var ports: [String] = []
        @Option(name: .customLong("constraint"), help: "node.labels.K==V, node.name!=N, node.role==agent (repeatable).") var constraints: [String] = []
        @Option(name: .customLong("spread-over"), help: "A node label to spread over, e.g. node.labels.zone.") var spreadOver: String?
        @Option(name: .customLong("max-per-node"), help: "At most this many tasks per node.") var maxPerNode: UInt32?
        @Option(name: .customLong("reserve-cpu"), help: "CPU reserved per task, in cores (e.g. 0.5).") var reserveCPU: Double?
        @Option(name: .customLong("reserve-memory"), help: "Memory reserved per task (e.g. 256M, 1G).") var reserveMemory: String?
        @Option(name: .customLong("limit-cpu"), help: "CPU limit per task, in cores.") var limitCPU: Double?
        @Option(name: .customLong("limit-memory"), help: "Memory limit per task (e.g. 512M).") var limitMemory: String?
        @Option(name: .customLong("limit-pids"), help: "Processes per task at most (0: no limit).") var limitPids: UInt64?
        @Option(name: .customLong("lb-policy"), help: "How the load balancer picks a backend: round-robin, least-conn, ip-hash, random or p2c.") var lbPolicy: String?
        @Option(name: .customLong("lb-mode"), help: "tcp (L4, the default) or http (L7: a backend per request); a port's /tcp or /http overrides it.") var lbMode: String?
        @Option(name: .customLong("lb-retries"), help: "Other backends a failed connection is tried on (default 2; 0: none).") var lbRetries: UInt32?
        @Option(name: .customLong("lb-connect-timeout"), help: "How long connecting to a backend may take before the next is tried (default 5s).") var lbConnectTimeout: String?
        @Option(name: .customLong("lb-idle-timeout"), help: "A connection idle this long is closed (default 60s).") var lbIdleTimeout: String?
        @Option(name: .customLong("lb-request-timeout"), help: "http mode: how long a backend may take to start its response (default 30s).") var lbRequestTimeout: String?
        @Option(name: .customLong("drain-timeout"), help: "How long a leaving backend's connections may finish before its task stops (default 10s).") var drainTimeout: String?
        @Flag(name: .customLong("proxy-protocol"), inversion: .prefixedNo, help: "Send backends a PROXY protocol v2 header with the client's address.") var proxyProtocol: Bool?
        @Option(name: .customLong("lb-max-conns"), help: "Connections (http: requests) at once to one backend from one node (0: no limit).") var lbMaxConnections: UInt32?
        @Option(name: .customLong("lb-slow-start"), help: "A new backend's share grows to full over this long (e.g. 30s; 0s: at once).") var lbSlowStart: String?
        @Flag(name: .customLong("lb-prefer-local"), inversion: .prefixedNo, help: "Send to backends on the receiving node while any can take the connection.") var lbPreferLocal: Bool?
        @Option(name: .customLong("lb-hold-timeout"), help: "Scaled to zero (autoscale min=0): how long a balancer holds a connection while a replica starts (default 30s).") var lbHoldTimeout: String?
        @Option(name: .customLong("lb-hold-queue"), help: "Scaled to zero: connections one node holds per port at most (default 1024); more are refused.") var lbHoldQueue: UInt32?
        @Option(name: .customLong("health-cmd"), help: "A health check command (run in the task).") var healthCommand: String?
        @Option(name: .customLong("health-http"), help: "A health check HTTP path on the first port.") var healthHTTP: String?
        @Option(name: .customLong("health-interval"), help: "Between health checks (e.g. 5s).") var healthInterval: String?
        @Option(name: .customLong("health-timeout"), help: "One health check's limit (e.g. 2s).") var healthTimeout: String?
        @Option(name: .customLong("health-retries"), help: "Failed checks in a row that make a task unhealthy.") var healthRetries: UInt32?
        @Option(name: .customLong("health-start-period"), help: "After start, failed checks do not count for this long (e.g. 30s).") var healthStartPeriod: String?
        @Flag(name: .customLong("health-tcp"), help: "A health check that connects to the first port.") var healthTCP = false
        @Option(name: .customLong("ready-cmd"), help: "A readiness check command: while it fails the task gets no traffic (it is not restarted).") var readyCommand: String?
        @Option(name: .customLong("ready-http"), help: "A readiness check HTTP path on the first port.") var readyHTTP: String?
        @Flag(name: .customLong("ready-tcp"), help: "A readiness check that connects to the first port.") var readyTCP = false
        @Option(name: .customLong("ready-interval"), help: "Between readiness checks (e.g. 2s).") var readyInterval: String?
        @Option(name: .customLong("restart-condition"), help: "any, on-failure or none.") var restartCondition: String?
        @Option(name: .customLong("restart-delay"), help: "Before the first restart in place (e.g. 1s); doubles each time, up to 5m.") var restartDelay: String?
        @Option(name: .customLong("restart-max-attempts"), help: "Give up after this many restarts within the window (0: never).") var restartMaxAttempts: UInt32?
        @Option(name: .customLong("restart-window"), help: "The window for --restart-max-attempts (e.g. 10m).") var restartWindow: String?
        @Option(name: .customLong("stop-grace-period"), help: "Between SIGTERM and SIGKILL when a task stops (default 10s).") var stopGracePeriod: String?
        @Option(name: .customLong("network"), help: "bridge (oci default: the task's own address on its node's subnet) or host.") var network: String?
        @Option(name: .customLong("read-only"), help: "true: an oci task's root file system is read-only.") var readOnly: Bool?
        @Option(name: .customLong("update-parallelism"), help: "Tasks updated at once (0: all).") var updateParallelism: UInt32?
        @Option(name: .customLong("update-delay"), help: "Between update batches (e.g. 10s).") var updateDelay: String?
        @Option(name: .customLong("update-order"), help: "stop-first or start-first.") var updateOrder: String?
        @Option(name: .customLong("update-failure-action"), help: "pause, rollback or continue.") var updateFailureAction: String?
        @Option(name: .customLong("update-monitor"), help: "How long each new task is watched (e.g. 5s).") var updateMonitor: String?
        @Option(name: .customLong("update-max-failure-ratio"), help: "Failures tolerated during an update, 0 to 1.") var updateMaxFailureRatio: Double?
        @Option(name: .customLong("autoscale"), help: ArgumentHelp(
            "Scale replicas with the load: min=N,max=N and targets per ready task target-rps=N, target-conns=N, target-cpu=PERCENT (of the CPU reservation), with up-window=10s, down-window=60s; on update only the keys given change (a target of 0 removes it), and off removes autoscaling.",
            valueName: "settings")) var autoscale: String?

        /// Applies the flags that were given to `spec`.
        func apply(to spec: inout Flotilla_V1_ServiceSpec) throws {
            if let driver { spec.driver = driver }
            if let image { spec.image = image }
            if let command { spec.command = command }
            if !args.isEmpty { spec.args = args }
            if !env.isEmpty {
                spec.env = try env.map { pair in
                    let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    guard parts.count == 2 else { throw ValidationError("--env \(pair) is not KEY=VALUE") }
                    var variable = Flotilla_V1_EnvVar()
                    variable.name = String(parts[0])
                    variable.value = String(parts[1])
                    return variable
                }
            }
            if let mode {
                switch mode {
                case "replicated": spec.mode = .replicated
                case "global": spec.mode = .global
                default: throw ValidationError("--mode must be replicated or global, not '\(mode)'")
                }
            }
            if let replicas { spec.replicas = replicas }
            if !ports.isEmpty { spec.ports = try ports.map(Self.port) }
            if !constraints.isEmpty { spec.constraints = constraints }
            if let spreadOver { spec.spreadOver = spreadOver }
            if let maxPerNode { spec.maxReplicasPerNode = maxPerNode }
            if let reserveCPU { spec.resources.cpuReservationMillis = UInt64(reserveCPU * 1000) }
            if let limitCPU { spec.resources.cpuLimitMillis = UInt64(limitCPU * 1000) }
            if let reserveMemory { spec.resources.memoryReservationBytes = try Self.bytes(reserveMemory, flag: "--reserve-memory") }
            if let limitMemory { spec.resources.memoryLimitBytes = try Self.bytes(limitMemory, flag: "--limit-memory") }
            if let limitPids { spec.resources.pidsLimit = limitPids }
            if let lbPolicy { spec.lbPolicy = lbPolicy }
            if let lbMode { spec.lbMode = lbMode }
            if let lbRetries { spec.loadBalancer.retries = lbRetries }
            if let lbConnectTimeout { spec.loadBalancer.connectTimeoutMs = try Self.milliseconds(lbConnectTimeout, flag: "--lb-connect-timeout") }
            if let lbIdleTimeout { spec.loadBalancer.idleTimeoutMs = try Self.milliseconds(lbIdleTimeout, flag: "--lb-idle-timeout") }
            if let lbRequestTimeout { spec.loadBalancer.requestTimeoutMs = try Self.milliseconds(lbRequestTimeout, flag: "--lb-request-timeout") }
            if let drainTimeout { spec.loadBalancer.drainTimeoutMs = try Self.milliseconds(drainTimeout, flag: "--drain-timeout") }
            if let proxyProtocol { spec.loadBalancer.proxyProtocol = proxyProtocol }
            if let lbMaxConnections { spec.loadBalancer.backendMaxConnections = lbMaxConnections }
            if let lbSlowStart { spec.loadBalancer.slowStartMs = try Self.milliseconds(lbSlowStart, flag: "--lb-slow-start") }
            if let lbPreferLocal { spec.loadBalancer.preferLocal = lbPreferLocal }
            if let lbHoldTimeout { spec.loadBalancer.holdTimeoutMs = try Self.milliseconds(lbHoldTimeout, flag: "--lb-hold-timeout") }
            if let lbHoldQueue { spec.loadBalancer.holdQueueLimit = lbHoldQueue }
            if let healthCommand { spec.healthCheck.command = ["/bin/sh", "-c", healthCommand] }
            if let healthHTTP { spec.healthCheck.httpPath = healthHTTP }
            if let healthInterval { spec.healthCheck.intervalMs = try Self.milliseconds(healthInterval, flag: "--health-interval") }
            if let healthTimeout { spec.healthCheck.timeoutMs = try Self.milliseconds(healthTimeout, flag: "--health-timeout") }
            if let healthRetries { spec.healthCheck.retries = healthRetries }
            if let healthStartPeriod { spec.healthCheck.startPeriodMs = try Self.milliseconds(healthStartPeriod, flag: "--health-start-period") }
            if healthTCP { spec.healthCheck.tcp = true }
            if let readyCommand { spec.readinessCheck.command = ["/bin/sh", "-c", readyCommand] }
            if let readyHTTP { spec.readinessCheck.httpPath = readyHTTP }
            if readyTCP { spec.readinessCheck.tcp = true }
            if let readyInterval { spec.readinessCheck.intervalMs = try Self.milliseconds(readyInterval, flag: "--ready-interval") }
            if let restartCondition { spec.restartPolicy.condition = restartCondition }
            if let restartDelay { spec.restartPolicy.delayMs = try Self.milliseconds(restartDelay, flag: "--restart-delay") }
            if let restartMaxAttempts { spec.restartPolicy.maxAttempts = restartMaxAttempts }
            if let restartWindow { spec.restartPolicy.windowMs = try Self.milliseconds(restartWindow, flag: "--restart-window") }
            if let stopGracePeriod { spec.stopGracePeriodMs = try Self.milliseconds(stopGracePeriod, flag: "--stop-grace-period") }
            if let network { spec.network = network }
            if let readOnly { spec.readOnlyRoot = readOnly }
            if let updateParallelism { spec.updateConfig.parallelism = updateParallelism }
            if let updateDelay { spec.updateConfig.delayMs = try Self.milliseconds(updateDelay, flag: "--update-delay") }
            if let updateOrder { spec.updateConfig.order = updateOrder }
            if let updateFailureAction { spec.updateConfig.failureAction = updateFailureAction }
            if let updateMonitor { spec.updateConfig.monitorMs = try Self.milliseconds(updateMonitor, flag: "--update-monitor") }
            if let updateMaxFailureRatio { spec.updateConfig.maxFailureRatio = updateMaxFailureRatio }
            if let autoscale {
                let settings: Flotilla_V1_AutoscaleSpec?
                do {
                    settings = try ServiceFile.autoscale(autoscale, over: spec.hasAutoscale ? spec.autoscale : nil)
                } catch {
                    throw ValidationError("--autoscale \(autoscale): \(error)")
                }
                if let settings {
                    spec.autoscale = settings
                    // Without --replicas the count starts (or stays) within the new bounds.
                    if replicas == nil && spec.mode == .replicated { spec.replicas = ServiceSpecRules.replicas(spec.replicas, within: settings) }
                } else {
                    spec.clearAutoscale()
                }
            }
        }

        static func port(_ text: String) throws -> Flotilla_V1_PortSpec {
            guard let port = ServiceFile.port(text) else {
                throw ValidationError("--publish \(text) is not PUBLISHED:TARGET[/tcp|http][,mode=host] or TARGET[/tcp|http]")
            }
            return port
        }

        static func bytes(_ text: String, flag: String) throws -> UInt64 {
            guard let bytes = ServiceFile.size(text) else { throw ValidationError("\(flag) \(text) is not a size (e.g. 512M, 1G)") }
            return bytes
        }

        static func milliseconds(_ text: String, flag: String) throws -> UInt32 {
            guard let milliseconds = ServiceFile.milliseconds(text) else {
                throw ValidationError("\(flag) \(text) is not a duration (e.g. 500ms, 5s, 1m)")
            }
            return milliseconds
        }
    }

    struct ProgressOptions: ParsableArguments {
        @Flag(help: "Return at once instead of waiting until the service has converged.") var detach = false
        @Option(help: ArgumentHelp("How long to wait for convergence (e.g. 60s).", valueName: "duration")) var timeout: String = "60s"
    }

    /// After a change: the one-line summary (table), waiting for convergence, then the record (JSON).
    static func settle(
        _ record: Flotilla_V1_ServiceRecord, name: String, line: String, cluster: ClusterOptions, progress: ProgressOptions
    ) async throws {
        if cluster.output == .table { print(line) }
        try await waitForConvergence(name, cluster: cluster, progress: progress)
        if cluster.output == .json { try printJSON(ServiceJSON(record)) }
    }

    /// Waits until every live task of `name` runs and any update finished, printing changes of progress.
    static func waitForConvergence(_ name: String, cluster: ClusterOptions, progress: ProgressOptions) async throws {
        guard !progress.detach else { return }
        let limit = Duration.milliseconds(Int(try SpecOptions.milliseconds(progress.timeout, flag: "--timeout")))
        let deadline = ContinuousClock.now + limit
        var last = ""
        while ContinuousClock.now < deadline {
            let inspected = try await cluster.withClient { try await $0.serviceInspect(name) }
            let live = inspected.tasks.filter { $0.desiredState == .running }
            let running = live.filter { $0.state == .running }.count
            let update = inspected.service.updateStatus.state
            let line = "\(name): \(running)/\(live.count) tasks running" + (update.isEmpty ? "" : ", update \(update)")
            if line != last, cluster.output == .table { print(line) }
            last = line
            if running == live.count && !["updating", "rolling-back", "rollback-started"].contains(update) { return }
            if update == "paused" { throw CLIError("the update paused: \(inspected.service.updateStatus.message)") }
            try await Task.sleep(for: .milliseconds(500))
        }
        throw CLIError("\(name) has not converged within \(progress.timeout) (\(last)); see flotilla service ps \(name)")
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a service.")
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var spec: SpecOptions
        @OptionGroup var progress: ProgressOptions
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            var service = Flotilla_V1_ServiceSpec()
            service.name = name
            service.replicas = 1
            try spec.apply(to: &service)
            let problems = ServiceSpecRules.problems(in: service)
            guard problems.isEmpty else { throw CLIError("the service spec is invalid: " + problems.map(\.description).joined(separator: "; ")) }
            let created = try await cluster.withClient { try await $0.serviceCreate(service) }
            try await ServiceCommand.settle(created, name: name, line: "service \(created.spec.name) created (id \(created.id), version \(created.version))", cluster: cluster, progress: progress)
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "update", abstract: "Change a service: only the flags given change; tasks are replaced by a rolling update.")
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var spec: SpecOptions
        @OptionGroup var progress: ProgressOptions
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let current = try await cluster.withClient { try await $0.serviceInspect(name) }.service
            var service = current.spec
            try spec.apply(to: &service)
            let updated = try await cluster.withClient { try await $0.serviceUpdate(service, expectedVersion: current.version) }
            try await ServiceCommand.settle(updated, name: name, line: "service \(name) updated to version \(updated.version)", cluster: cluster, progress: progress)
        }
    }

    struct Scale: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "scale", abstract: "Set the number of tasks: NAME=N.")
        @Argument(help: "NAME=REPLICAS") var assignment: String
        @OptionGroup var progress: ProgressOptions
        @OptionGroup var cluster: ClusterOptions

        func validate() throws {
            let parts = assignment.split(separator: "=")
            guard parts.count == 2, UInt32(parts[1]) != nil else { throw ValidationError("'\(assignment)' is not NAME=REPLICAS") }
        }

        func run() async throws {
            let parts = assignment.split(separator: "=").map(String.init)
            let current = try await cluster.withClient { try await $0.serviceInspect(parts[0]) }.service
            var spec = current.spec
            spec.replicas = UInt32(parts[1])!
            let updated = try await cluster.withClient { try await $0.serviceUpdate(spec, expectedVersion: current.version) }
            try await ServiceCommand.settle(updated, name: parts[0], line: "service \(parts[0]) scaled to \(spec.replicas)", cluster: cluster, progress: progress)
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rollback", abstract: "Return a service to its previous spec.")
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var progress: ProgressOptions
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let rolled = try await cluster.withClient { try await $0.serviceRollback(name) }
            try await ServiceCommand.settle(rolled, name: name, line: "service \(name) rolling back (version \(rolled.version))", cluster: cluster, progress: progress)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a service; its tasks stop.", aliases: ["remove"])
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let removed = try await cluster.withClient { try await $0.serviceRemove(name) }
            switch cluster.output {
            case .json: try printJSON(["removed": removed.spec.name])
            case .table: print("service \(name) removed")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List services.", aliases: ["list"])
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let services = try await cluster.withClient { try await $0.serviceList() }
            switch cluster.output {
            case .json:
                try printJSON(services.map { ServiceJSON($0.service, running: $0.running, desired: $0.desired) })
            case .table:
                var table = TextTable("ID", "NAME", "MODE", "REPLICAS", "DRIVER", "IMAGE / COMMAND", "VIRTUAL IP", "PORTS", "VERSION", "UPDATE")
                for summary in services {
                    let spec = summary.service.spec
                    table.append(
                        summary.service.id, spec.name, spec.mode == .global ? "global" : "replicated",
                        "\(summary.running)/\(spec.mode == .global ? summary.desired : spec.replicas)", spec.driver,
                        spec.driver == "process" ? spec.command : spec.image, summary.service.virtualIp.isEmpty ? "-" : summary.service.virtualIp,
                        ServiceJSON.portText(spec),
                        "\(summary.service.version)", summary.service.updateStatus.state.isEmpty ? "-" : summary.service.updateStatus.state)
                }
                print(table.render())
            }
        }
    }

    struct Ps: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ps", abstract: "List a service's tasks: where, desired and current state, since when, why.")
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let inspected = try await cluster.withClient { try await $0.serviceInspect(name) }
            switch cluster.output {
            case .json:
                try printJSON(inspected.tasks.map { TaskJSON($0, node: inspected.nodeNames[$0.nodeID]) })
            case .table:
                var table = TextTable("TASK", "SLOT", "NODE", "DESIRED", "CURRENT", "HEALTH", "RESTARTS", "SINCE", "VERSION", "MESSAGE")
                for task in inspected.tasks {
                    let json = TaskJSON(task, node: inspected.nodeNames[task.nodeID])
                    table.append(
                        task.id, task.slot == 0 ? "-" : "\(task.slot)", json.node ?? "-", json.desired, json.current, json.healthText,
                        "\(task.restarts)", NodeJSON.ago(task.stateChangedAtMs), "\(task.serviceVersion)", task.message.isEmpty ? "-" : task.message)
                }
                print(table.render())
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show a service's spec (load-balancer and autoscale settings with their defaults), version, virtual IP and update status (JSON).")
        @Argument(help: "The service's name.") var name: String
        @OptionGroup var cluster: ClusterOptions

        func run() async throws {
            let inspected = try await cluster.withClient { try await $0.serviceInspect(name) }
            var options = JSONEncodingOptions()
            options.preserveProtoFieldNames = true
            print(try inspected.service.jsonString(options: options))
        }
    }
}

/// `--output json` of a service.
struct ServiceJSON: Encodable {
    let id: String
    let name: String
    let version: UInt64
    let mode: String
    let replicas: UInt32
    let running: UInt32?
    let desired: UInt32?
    let update: String
    /// The service's virtual IP (every node's load balancer serves it on the service's ports).
    let virtualIP: String
    /// The load balancer's mode and policy.
    let lbMode: String
    let lbPolicy: String

    enum CodingKeys: String, CodingKey {
        case id, name, version, mode, replicas, running, desired, update
        case virtualIP = "virtual_ip", lbMode = "lb_mode", lbPolicy = "lb_policy"
    }

    init(_ service: Flotilla_V1_ServiceRecord, running: UInt32? = nil, desired: UInt32? = nil) {
        id = service.id
        name = service.spec.name
        version = service.version
        mode = service.spec.mode == .global ? "global" : "replicated"
        replicas = service.spec.replicas
        self.running = running
        self.desired = desired
        update = service.updateStatus.state
        virtualIP = service.virtualIp
        let normalized = ServiceSpecRules.normalized(service.spec)
        lbMode = normalized.lbMode
        lbPolicy = normalized.lbPolicy
    }

    /// "8080→80/http,9000/tcp (host)": each port's protocol is its own or the service's mode.
    static func portText(_ spec: Flotilla_V1_ServiceSpec) -> String {
        spec.ports.isEmpty ? "-" : spec.ports.map {
            ($0.publishedPort == 0 ? "" : "\($0.publishedPort)→") + "\($0.targetPort)/\(ServiceSpecRules.effectiveProtocol(of: $0, in: spec))"
                + ($0.publishMode == "host" ? " (host)" : "")
        }.joined(separator: ",")
    }
}

/// `--output json` of a task.
struct TaskJSON: Encodable {
    let id: String
    let slot: UInt32
    let node: String?
    let desired: String
    let current: String
    let message: String
    let version: UInt64
    /// Ready for traffic (running, healthy, passing its readiness check).
    let ready: Bool
    /// "", "starting", "healthy" or "unhealthy".
    let health: String
    /// Restarts in place by its agent.
    let restarts: UInt32
    /// Where it accepts connections on its first port.
    let address: String

    init(_ task: Flotilla_V1_TaskRecord, node: String?) {
        id = task.id
        slot = task.slot
        self.node = task.nodeID.isEmpty ? nil : (node ?? task.nodeID)
        desired = Self.name(task.desiredState)
        current = Self.name(task.state)
        message = task.message
        version = task.serviceVersion
        ready = task.ready
        health = task.health
        restarts = task.restarts
        address = task.address
    }

    /// "healthy, ready", "starting", "not ready", or "-" for a task that does not run.
    var healthText: String {
        guard current == "running" || current == "starting" else { return "-" }
        let readiness = ready ? "ready" : "not ready"
        return health.isEmpty ? readiness : "\(health), \(readiness)"
    }

    static func name(_ state: Flotilla_V1_TaskState) -> String {
        switch state {
        case .pending: "pending"
        case .assigned: "assigned"
        case .starting: "starting"
        case .running: "running"
        case .complete: "complete"
        case .failed: "failed"
        case .shutdown: "shutdown"
        case .orphaned: "orphaned"
        case .UNRECOGNIZED(let value): "unknown(\(value))"
        }
    }
}

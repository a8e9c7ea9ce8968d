import ClusterModel
import Foundation
public import Messages
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The OCI driver: each task is a container run by crun or runc from a bundle the agent writes.
///
/// Start is `<runtime> create` (the container inherits its stdout and stderr: the task's log FIFOs, or
/// `<bundle>/output.log` without them; the runtime's own messages go to `<bundle>/create.log`), then `start`. The
/// agent is a child subreaper, so the container's process becomes its child when `create` exits, and
/// `waitpid` gives its exact exit status; before `delete`, the container's memory cgroup tells whether the
/// kernel killed it for memory (`oom_kill` in `memory.oom_control`). Stop is `kill TERM`, then `kill KILL`
/// after the grace period.
public final class OCIDriver: ContainerRuntime {
    public let name = "oci"
    public let runtime: OCIRuntimeChoice
    /// The runtime's state directory (`--root`), per agent, so agents sharing a machine never see each other's.
    public let stateRoot: String
    /// Where bundles (config.json, rootfs mount point, log) are written, one directory per task.
    public let bundles: String
    /// The cgroup parent of every container of this agent (e.g. "flotilla-<node>").
    public let cgroupParent: String
    /// The static init bind-mounted as PID 1 (catatonit); nil: the command is PID 1.
    public let initBinary: String?
    /// The root file system for a task: an image's, pulled and unpacked by the caller in `prepare` (read-only;
    /// the container gets a writable overlay on top).
    public let rootfs: @Sendable (TaskLaunch) async throws -> (path: String, config: ImageConfig)
    /// The node's container network; nil: every container shares the host's network.
    public let networking: ContainerNetwork?
    /// The node's images (listing and garbage collection); nil when the caller manages them.
    public let imageStore: ImageStore?
    /// The image root file system of every task prepared or running, by task id (what garbage collection keeps).
    private let imagesInUse = Mutex<[String: String]>([:])
    /// Running containers by the pid of their process.
    private let containers = Mutex<[Int32: String]>([:])
    /// Containers an earlier agent process left running, by task id, until `start` adopts them or
    /// `removeUnassigned` removes them.
    private let adoptable = Mutex<[String: LeftRunning]>([:])
    struct LeftRunning: Sendable {
        let containerID: String
        let pid: Int32
        let bundle: String
    }
    /// Root file systems `prepare` got, by task id, until `start` takes them.
    private let prepared = Mutex<[String: (path: String, config: ImageConfig)]>([:])

    public init(
        runtime: OCIRuntimeChoice, stateRoot: String, bundles: String, cgroupParent: String, initBinary: String?,
        networking: ContainerNetwork? = nil, imageStore: ImageStore? = nil, rootfs: @escaping @Sendable (TaskLaunch) async throws -> (path: String, config: ImageConfig)
    ) throws {
        self.runtime = runtime
        self.stateRoot = stateRoot
        self.bundles = bundles
        self.cgroupParent = cgroupParent
        self.initBinary = initBinary
        self.networking = networking
        self.imageStore = imageStore
        self.rootfs = rootfs
        try FileManager.default.createDirectory(atPath: bundles, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: stateRoot, withIntermediateDirectories: true)
        guard Subreaper.enable() else { throw DriverError("could not make the agent a child subreaper (prctl): container exit codes would be lost") }
        // Adopted processes that exit on their own (a check's command whose runtime process died) are reaped
        // every few seconds, for as long as the driver exists.
        Thread.detachNewThread { [weak self] in
            while let driver = self {
                driver.sweepOrphans()
                Thread.sleep(forTimeInterval: 2)
            }
        }
    }

    /// The container id of a task (task ids are already short and safe; the prefix keeps them recognisable).
    func containerID(_ taskID: String) -> String { "flt-" + taskID }

    /// Gets the task's image (a registry pull may take a while), for `start`.
    public func prepare(_ launch: TaskLaunch) async throws {
        let image = try await rootfs(launch)
        prepared.withLock { $0[launch.taskID] = image }
        imagesInUse.withLock { $0[launch.taskID] = image.path }
    }

    public func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (TaskExit) -> Void) async throws -> RuntimeHandle {
        guard let image = prepared.withLock({ $0.removeValue(forKey: launch.taskID) }) else {
            throw DriverError("the image of task \(launch.taskID) was not prepared (prepare(_:) comes before start(_:))")
        }
        if let left = adoptable.withLock({ $0.removeValue(forKey: launch.taskID) }), kill(left.pid, 0) == 0 {
            return await adopt(left, launch: launch, image: image.path, onExit: onExit)
        }
        let id = containerID(launch.taskID)
        let bundle = bundles + "/" + id
        try? FileManager.default.removeItem(atPath: bundle)
        try FileManager.default.createDirectory(atPath: bundle + "/upper", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: bundle + "/work", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: bundle + "/rootfs", withIntermediateDirectories: true)
        // The image stays read-only and shared; the container writes to its own upper directory.
        let options = "lowerdir=\(image.path),upperdir=\(bundle)/upper,workdir=\(bundle)/work"
        guard mount("overlay", bundle + "/rootfs", "overlay", 0, options) == 0 else {
            throw DriverError("could not mount the container's overlay root (\(String(cString: strerror(errno)))); the OCI driver needs root")
        }
        let networking = launch.spec.network == "host" ? nil : self.networking
        do {
            // Its own network namespace with an address on the node's subnet, unless it shares the host's.
            let attachment = try await networking?.attach(taskID: launch.taskID)
            let resolvConf = try Self.writeResolvConf(bundle: bundle, gateway: attachment == nil ? nil : await networking?.gateway)
            let config = OCIRuntimeConfigBuilder.build(Self.request(
                for: launch, image: image.config, id: id, rootfs: bundle + "/rootfs", cgroupsPath: "/\(cgroupParent)/\(id)",
                networkNamespacePath: attachment?.namespacePath, initBinary: initBinary, resolvConf: resolvConf))
            try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: bundle + "/config.json"))
            let pid = try await create(id: id, bundle: bundle, output: launch.output)
            // Tracked from now on (it cannot exit before `start`), so no sweep of adopted processes reaps it before
            // its waiter does.
            OrphanReaper.track(pid)
            let startStatus = try await HostProcess.run(runtime.binary, ["--root", stateRoot, "start", id], appendingTo: bundle + "/runtime.log").status
            guard startStatus == 0 else {
                // Not started: its waiter never comes, so the sweep may reap it once `delete` ends it.
                OrphanReaper.untrack(pid)
                throw DriverError("\(runtime.name) start failed: \(Self.tail(bundle + "/runtime.log"))")
            }
            let memoryCgroup = "/sys/fs/cgroup/memory/\(cgroupParent)/\(id)"
            containers.withLock { $0[pid] = id }
            Thread.detachNewThread { [self] in
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
                let oomKilled = Self.oomKills(memoryCgroup) > 0
                self.containers.withLock { $0[pid] = nil }
                OrphanReaper.untrack(pid)
                self.imagesInUse.withLock { $0[launch.taskID] = nil }
                self.cleanUp(id: id, bundle: bundle)
                // The network goes before the worker hears of the exit, so a restart in place attaches afresh.
                let exit = TaskExit(status: code, oomKilled: oomKilled)
                guard let networking else { return onExit(exit) }
                Task {
                    await networking.detach(taskID: launch.taskID)
                    onExit(exit)
                }
            }
            return RuntimeHandle(runtime: name, pid: pid, address: attachment.map { "\($0.address)" })
        } catch {
            cleanUp(id: id, bundle: bundle)
            imagesInUse.withLock { $0[launch.taskID] = nil }
            await networking?.detach(taskID: launch.taskID)
            throw error
        }
    }

    // MARK: - After an agent restart

    /// Finds the containers an earlier agent process of this node left: running ones wait for their task's
    /// assignment to adopt them; stopped ones are removed at once (with their bundle and network). Returns the
    /// task ids of the running ones.
    public func recover() async -> [String] {
        guard let listing = try? await HostProcess.run(runtime.binary, ["--root", stateRoot, "list", "--format", "json"]),
              listing.status == 0,
              let entries = try? JSONSerialization.jsonObject(with: Data(listing.output.utf8)) as? [[String: Any]] else { return [] }
        var running: [String] = []
        for entry in entries {
            guard let id = entry["id"] as? String, id.hasPrefix("flt-") else { continue }
            let taskID = String(id.dropFirst("flt-".count))
            let pid = Int32(entry["pid"] as? Int ?? 0)
            let bundle = entry["bundle"] as? String ?? bundles + "/" + id
            if entry["status"] as? String == "running", pid > 0, kill(pid, 0) == 0 {
                adoptable.withLock { $0[taskID] = LeftRunning(containerID: id, pid: pid, bundle: bundle) }
                running.append(taskID)
            } else {
                cleanUp(id: id, bundle: bundle)
                await networking?.detach(taskID: taskID)
            }
        }
        return running.sorted()
    }

    /// Takes over a container an earlier agent process started: it keeps running untouched. Not this process's
    /// child, so its end is noticed by polling (within 250 ms) and its exit status is unknown.
    private func adopt(
        _ left: LeftRunning, launch: TaskLaunch, image: String, onExit: @escaping @Sendable (TaskExit) -> Void
    ) async -> RuntimeHandle {
        let networking = launch.spec.network == "host" ? nil : self.networking
        let address = await networking?.adoptedAddress(taskID: launch.taskID)
        containers.withLock { $0[left.pid] = left.containerID }
        imagesInUse.withLock { $0[launch.taskID] = image }
        let memoryCgroup = "/sys/fs/cgroup/memory/\(cgroupParent)/\(left.containerID)"
        Thread.detachNewThread { [self] in
            while kill(left.pid, 0) == 0 && !Self.isZombie(left.pid) { Thread.sleep(forTimeInterval: 0.25) }
            let oomKilled = Self.oomKills(memoryCgroup) > 0
            self.containers.withLock { $0[left.pid] = nil }
            self.imagesInUse.withLock { $0[launch.taskID] = nil }
            self.cleanUp(id: left.containerID, bundle: left.bundle)
            let exit = TaskExit(status: 255, oomKilled: oomKilled, statusUnknown: true)
            guard let networking else { return onExit(exit) }
            Task {
                await networking.detach(taskID: launch.taskID)
                onExit(exit)
            }
        }
        return RuntimeHandle(runtime: name, pid: left.pid, address: address, adopted: true)
    }

    /// Removes the containers an earlier agent process left that no assignment claimed.
    public func removeUnassigned(keeping assigned: Set<String>) async {
        let unclaimed = adoptable.withLock { found in
            let gone = found.filter { !assigned.contains($0.key) }
            for task in gone.keys { found[task] = nil }
            return gone
        }
        for (taskID, left) in unclaimed {
            _ = try? await HostProcess.run(runtime.binary, ["--root", stateRoot, "kill", left.containerID, "KILL"])
            cleanUp(id: left.containerID, bundle: left.bundle)
            await networking?.detach(taskID: taskID)
        }
        // Namespaces and veths of tasks that are gone (what a crash left, or a stopped container's).
        let running = Set(containers.withLock { $0.values.map { String($0.dropFirst("flt-".count)) } })
        _ = try? await networking?.sweep(keeping: assigned.union(running))
    }

    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = ProcFile.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].split(separator: " ").first == "Z"
    }

    /// The node's images, with how many tasks use each.
    public func images() -> [Flotilla_V1_NodeImage] {
        guard let imageStore else { return [] }
        let inUse = Dictionary(imagesInUse.withLock { $0.values.map { ("sha256:" + ($0 as NSString).lastPathComponent, 1) } }, uniquingKeysWith: +)
        return imageStore.list().map { record in
            var image = Flotilla_V1_NodeImage()
            image.reference = record.reference
            image.digest = record.digest
            image.sizeBytes = record.size
            image.unpackedBytes = record.unpackedSize
            image.createdMs = UInt64(max(0, record.created.timeIntervalSince1970 * 1000))
            image.lastUsedMs = UInt64(max(0, record.lastUsed.timeIntervalSince1970 * 1000))
            image.inUse = UInt32(inUse[record.digest] ?? 0)
            return image
        }
    }

    /// Removes images no task uses, as `policy` says (`ImageStore.collectGarbage`); the references removed.
    @discardableResult
    public func collectImageGarbage(policy: ImageGarbagePolicy = ImageGarbagePolicy()) throws -> [ImageRecord] {
        guard let imageStore else { return [] }
        let inUse = Set(imagesInUse.withLock { $0.values.map { "sha256:" + ($0 as NSString).lastPathComponent } })
        return try imageStore.collectGarbage(inUse: inUse, policy: policy)
    }

    /// CPU and memory of a running container, from its cgroup (v1 or v2: `CgroupUsage`).
    public func stats(_ handle: RuntimeHandle) -> TaskStats? {
        guard let id = containers.withLock({ $0[handle.pid] }) else { return nil }
        return CgroupUsage().stats(ofCgroup: "\(cgroupParent)/\(id)")
    }

    /// Containers running now (started or adopted by this process).
    public var runningContainers: Int { containers.withLock { $0.count } }

    /// At a clean agent exit, once every container has stopped: removes the runtime's state directory (and its
    /// node directory when that is empty), so nothing of this agent stays under /run.
    public func releaseState() {
        guard containers.withLock({ $0.isEmpty }) else { return }
        try? FileManager.default.removeItem(atPath: stateRoot)
        let parent = (stateRoot as NSString).deletingLastPathComponent
        if (try? FileManager.default.contentsOfDirectory(atPath: parent))?.isEmpty == true { rmdir(parent) }
    }

    /// `create`: the runtime prepares the container and exits; the container's process waits to be started.
    private func create(id: String, bundle: String, output: TaskOutput?) async throws -> Int32 {
        let pidFile = bundle + "/container.pid"
        let status = try await HostProcess.run(
            runtime.binary, ["--root", stateRoot, "--log", bundle + "/create.log", "create", "--bundle", bundle, "--pid-file", pidFile, id],
            appendingTo: bundle + "/output.log", streams: output).status
        guard status == 0, let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            let why = [Self.tail(bundle + "/create.log"), Self.tail(bundle + "/output.log")].filter { !$0.isEmpty }.joined(separator: "; ")
            throw DriverError("\(runtime.name) create failed (status \(status)): \(why)")
        }
        return pid
    }

    public func stop(_ handle: RuntimeHandle, grace: Duration, exited: @Sendable () async -> Bool) async {
        guard let id = containers.withLock({ $0[handle.pid] }) else { return }
        _ = try? await HostProcess.run(runtime.binary, ["--root", stateRoot, "kill", id, "TERM"])
        let deadline = ContinuousClock.now + grace
        var sweeps = 0
        while ContinuousClock.now < deadline {
            if await exited() { return }
            try? await Task.sleep(for: .milliseconds(20))
            // A container ends only once every process in it is reaped, adopted ones included.
            sweeps += 1
            if sweeps % 25 == 1 { sweepOrphans() }
        }
        _ = try? await HostProcess.run(runtime.binary, ["--root", stateRoot, "kill", id, "KILL"])
        sweepOrphans()
    }

    /// `<runtime> exec` in the task's container, with the task's environment.
    public func exec(_ handle: RuntimeHandle, launch: TaskLaunch, command: [String], timeout: Duration) async throws -> Int32 {
        guard let id = containers.withLock({ $0[handle.pid] }) else { throw DriverError("the container is not running") }
        guard !command.isEmpty else { throw DriverError("the command is empty") }
        var environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FLOTILLA_TASK_ID=\(launch.taskID)"]
        environment += launch.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        if let port = launch.port { environment.append("PORT=\(port)") }
        let arguments = ["--root", stateRoot, "exec"] + environment.flatMap { ["--env", $0] } + [id] + command
        do {
            return try await HostProcess.run(runtime.binary, arguments, timeout: timeout).status
        } catch let timedOut as HostProcess.TimedOut {
            // The command outlived its runtime process and is now the agent's: end it, or it holds the container.
            sweepOrphans(killingIn: id)
            throw timedOut
        }
    }

    /// Reaps what the agent adopted from its containers (see `OrphanReaper`); with a container id, also kills
    /// what is left running in it.
    func sweepOrphans(killingIn id: String? = nil) {
        OrphanReaper.sweep(killing: id.map { "/\(cgroupParent)/\($0)" })
    }

    private func cleanUp(id: String, bundle: String) {
        _ = try? HostProcess.runBlocking(runtime.binary, ["--root", stateRoot, "delete", "--force", id], output: nil)
        _ = umount2(bundle + "/rootfs", Int32(MNT_DETACH))
        try? FileManager.default.removeItem(atPath: bundle)
    }

    /// Writes the container's /etc/resolv.conf into its bundle (so it goes with the container) and returns its
    /// path. On the bridge network (`gateway` set) it names the node's DNS responder at the gateway and searches the
    /// cluster domain; sharing the host's network, it is a copy of the host's. Nil when the host has none: the
    /// image's own stays.
    static func writeResolvConf(bundle: String, gateway: IPv4Address?, hostResolvConf: String = "/etc/resolv.conf") throws -> String? {
        let text: String
        if let gateway {
            text = ServiceDiscovery.resolvConf(nameserver: gateway)
        } else {
            guard let host = try? String(contentsOfFile: hostResolvConf, encoding: .utf8) else { return nil }
            text = host
        }
        let path = bundle + "/resolv.conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The bundle request for a task: the image's entrypoint and cmd unless the spec gives a command (run with
    /// the image's /bin/sh), the image's environment then the spec's then PORT and FLOTILLA_TASK_ID.
    static func request(
        for launch: TaskLaunch, image: ImageConfig, id: String, rootfs: String, cgroupsPath: String, networkNamespacePath: String? = nil,
        initBinary: String?, resolvConf: String? = nil
    ) -> OCIRuntimeConfigBuilder.Request {
        let spec = launch.spec
        let args: [String]
        if !spec.command.isEmpty {
            args = ["/bin/sh", "-c", spec.args.isEmpty ? spec.command : spec.command + " \"$@\"", "flotilla-task"] + spec.args
        } else {
            args = image.entrypoint + (spec.args.isEmpty ? image.cmd : spec.args)
        }
        var environment = image.env.isEmpty ? ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] : image.env
        for (key, value) in launch.environment.sorted(by: { $0.key < $1.key }) {
            environment.removeAll { $0.hasPrefix(key + "=") }
            environment.append("\(key)=\(value)")
        }
        environment.append("FLOTILLA_TASK_ID=\(launch.taskID)")
        if let port = launch.port { environment.append("PORT=\(port)") }
        let user = image.user.split(separator: ":").map { UInt32($0) }
        return OCIRuntimeConfigBuilder.Request(
            taskID: launch.taskID, args: args, env: environment, cwd: image.workingDir.isEmpty ? "/" : image.workingDir,
            uid: user.first.flatMap { $0 } ?? 0, gid: user.count > 1 ? (user[1] ?? 0) : 0, rootfs: rootfs, readonlyRootfs: spec.readOnlyRoot,
            hostname: launch.taskID, cgroupsPath: cgroupsPath, networkNamespacePath: networkNamespacePath,
            memoryLimitBytes: spec.resources.memoryLimitBytes, cpuLimitMillis: spec.resources.cpuLimitMillis,
            cpuReservationMillis: spec.resources.cpuReservationMillis, pidsLimit: spec.resources.pidsLimit, initBinary: initBinary,
            resolvConf: resolvConf)
    }

    /// `oom_kill N` from a v1 memory cgroup's `memory.oom_control`; 0 when unreadable.
    static func oomKills(_ cgroup: String) -> Int {
        guard let text = try? String(contentsOfFile: cgroup + "/memory.oom_control", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return 0
    }

    static func tail(_ path: String) -> String {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(3).joined(separator: "; ")
    }
}

/// Makes this process a child subreaper: orphaned descendants (a container's process, once `create` exits)
/// become its children, so it can `waitpid` them. `prctl` is variadic and not visible from Swift; it is reached
/// through `dlsym`.
enum Subreaper {
    static func enable() -> Bool {
        typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "prctl") else { return false }
        let prctl = unsafeBitCast(symbol, to: Prctl.self)
        return prctl(36 /* PR_SET_CHILD_SUBREAPER */, 1, 0, 0, 0) == 0
    }
}

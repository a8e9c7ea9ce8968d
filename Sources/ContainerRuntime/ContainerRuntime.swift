public import Messages

/// What a runtime needs to start one task.
public struct TaskLaunch: Sendable {
    public let taskID: String
    public let serviceName: String
    public let spec: Flotilla_V1_ServiceSpec
    /// The service's environment, plus FLOTILLA_NODE and FLOTILLA_NODE_ID from the worker (PORT and
    /// FLOTILLA_TASK_ID are the runtime's to add).
    public let environment: [String: String]
    /// The port the task's first port listens on, handed in as PORT; nil when it has none.
    public let port: Int?
    /// Where the task's stdout and stderr go (its log FIFOs, `TaskLogs.capture`); nil: nowhere.
    public let output: TaskOutput?

    public init(
        taskID: String, serviceName: String, spec: Flotilla_V1_ServiceSpec, environment: [String: String], port: Int?,
        output: TaskOutput? = nil
    ) {
        self.taskID = taskID
        self.serviceName = serviceName
        self.spec = spec
        self.environment = environment
        self.port = port
        self.output = output
    }
}

/// How a task ended.
public struct TaskExit: Sendable, Equatable {
    /// Its exit status; 128 + the signal when a signal ended it.
    public let status: Int32
    /// The kernel killed it for exceeding its memory limit.
    public let oomKilled: Bool
    /// Its status cannot be known: it was re-adopted after an agent restart, and only its parent could have
    /// waited for it (`status` is then 255).
    public let statusUnknown: Bool

    public init(status: Int32, oomKilled: Bool, statusUnknown: Bool = false) {
        self.status = status
        self.oomKilled = oomKilled
        self.statusUnknown = statusUnknown
    }
}

/// A running task, as its runtime knows it.
public struct RuntimeHandle: Sendable, Hashable {
    /// The runtime that started it.
    public let runtime: String
    /// The process that stands for the task (what gets the stop signal).
    public let pid: Int32
    /// The task's own IP address when it has its own network namespace; nil: it shares the host's network.
    public let address: String?
    /// It was already running, started by an earlier agent process, and was taken over rather than started.
    public let adopted: Bool

    public init(runtime: String, pid: Int32, address: String? = nil, adopted: Bool = false) {
        self.runtime = runtime
        self.pid = pid
        self.address = address
        self.adopted = adopted
    }
}

/// How the agent's worker runs tasks: one implementation per driver a service may choose (`--driver`): the
/// process driver runs a command on the host, the OCI driver a container through crun or runc.
public protocol ContainerRuntime: Sendable {
    /// The `driver` value of the specs it runs ("process", "oci").
    var name: String { get }
    /// Gets what the task needs before it can start, work that may take long (the OCI driver pulls and unpacks
    /// the task's image here, without blocking a thread). The worker calls it before `start`; the default does
    /// nothing.
    func prepare(_ launch: TaskLaunch) async throws
    /// Starts the task (after `prepare`); `onExit` runs once with how it ended, whatever the reason. Suspends
    /// while the runtime creates it: other tasks start and stop meanwhile.
    func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (TaskExit) -> Void) async throws -> RuntimeHandle
    /// Asks the task to stop (SIGTERM), and kills it (SIGKILL) if `exited` is not true within `grace`.
    func stop(_ handle: RuntimeHandle, grace: Duration, exited: @Sendable () async -> Bool) async
    /// Runs `command` (argv) where the task runs (inside its container, for the OCI driver), with the task's
    /// environment: a health check. Its exit status; throws when it could not run or took longer than `timeout`.
    func exec(_ handle: RuntimeHandle, launch: TaskLaunch, command: [String], timeout: Duration) async throws -> Int32
    /// The images it keeps on this node (for `flotilla image ls`).
    func images() -> [Flotilla_V1_NodeImage]
    /// After a complete assignment set: removes what an earlier agent process left running that is no longer
    /// assigned (`assigned`: the tasks that should run).
    func removeUnassigned(keeping assigned: Set<String>) async
    /// What the task uses now (from its cgroup); nil when the runtime cannot tell.
    func stats(_ handle: RuntimeHandle) -> TaskStats?
}

/// A task's resource use, read from its cgroup.
public struct TaskStats: Sendable, Equatable {
    /// CPU time used since it started, nanoseconds (user + system).
    public var cpuNanoseconds: UInt64
    /// Memory in use now, bytes (page cache included, as the cgroup counts it).
    public var memoryBytes: UInt64

    public init(cpuNanoseconds: UInt64, memoryBytes: UInt64) {
        self.cpuNanoseconds = cpuNanoseconds
        self.memoryBytes = memoryBytes
    }
}

extension ContainerRuntime {
    public func prepare(_ launch: TaskLaunch) async throws {}
    /// None by default.
    public func images() -> [Flotilla_V1_NodeImage] { [] }
    /// Unknown by default.
    public func stats(_ handle: RuntimeHandle) -> TaskStats? { nil }
    /// Nothing survives an agent restart by default.
    public func removeUnassigned(keeping assigned: Set<String>) async {}
}

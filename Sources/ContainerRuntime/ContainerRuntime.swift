public import Messages

/// What a runtime needs to start one task.
public struct TaskLaunch: Sendable {
    public let taskID: String
    public let serviceName: String
    public let spec: Flotilla_V1_ServiceSpec
    /// The service's environment (PORT and FLOTILLA_TASK_ID are the runtime's to add).
    public let environment: [String: String]
    /// The port the task's first port listens on, handed in as PORT; nil when it has none.
    public let port: Int?

    public init(taskID: String, serviceName: String, spec: Flotilla_V1_ServiceSpec, environment: [String: String], port: Int?) {
        self.taskID = taskID
        self.serviceName = serviceName
        self.spec = spec
        self.environment = environment
        self.port = port
    }
}

/// How a task ended.
public struct TaskExit: Sendable, Equatable {
    /// Its exit status; 128 + the signal when a signal ended it.
    public let status: Int32
    /// The kernel killed it for exceeding its memory limit.
    public let oomKilled: Bool

    public init(status: Int32, oomKilled: Bool) {
        self.status = status
        self.oomKilled = oomKilled
    }
}

/// A running task, as its runtime knows it.
public struct RuntimeHandle: Sendable, Hashable {
    /// The runtime that started it.
    public let runtime: String
    /// The process that stands for the task (what gets the stop signal).
    public let pid: Int32

    public init(runtime: String, pid: Int32) {
        self.runtime = runtime
        self.pid = pid
    }
}

/// How the agent's worker runs tasks: one implementation per driver a service may choose (`--driver`). The
/// process driver runs a command on the host; the OCI driver (crun/runc, issue 6) extends this contract with
/// images, limits, stats, logs and recovery after an agent restart.
public protocol ContainerRuntime: Sendable {
    /// The `driver` value of the specs it runs ("process", "oci").
    var name: String { get }
    /// Gets what the task needs before it can start, work that may take long (the OCI driver pulls and unpacks
    /// the task's image here, without blocking a thread). The worker calls it before `start`; the default does
    /// nothing.
    func prepare(_ launch: TaskLaunch) async throws
    /// Starts the task (after `prepare`); `onExit` runs once with how it ended, whatever the reason.
    func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (TaskExit) -> Void) throws -> RuntimeHandle
    /// Asks the task to stop (SIGTERM), and kills it (SIGKILL) if `exited` is not true within `grace`.
    func stop(_ handle: RuntimeHandle, grace: Duration, exited: @Sendable () async -> Bool) async
}

extension ContainerRuntime {
    public func prepare(_ launch: TaskLaunch) async throws {}
}

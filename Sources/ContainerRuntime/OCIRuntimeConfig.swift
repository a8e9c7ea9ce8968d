/// The `config.json` of an OCI runtime bundle (runtime-spec 1.0.2), the subset Flotilla writes for crun and runc.
/// Encoded with `JSONEncoder`; field names are the spec's.
public struct OCIRuntimeConfig: Codable, Sendable, Equatable {
    public var ociVersion = "1.0.2"
    public var process: Process
    public var root: Root
    public var hostname: String
    public var mounts: [Mount]
    public var linux: Linux

    public struct Process: Codable, Sendable, Equatable {
        public var terminal = false
        public var user: User
        public var args: [String]
        public var env: [String]
        public var cwd: String
        public var capabilities: Capabilities
        /// Unset: the container inherits the agent's limits (raising one above them needs CAP_SYS_RESOURCE, which a
        /// container does not have, and the runtime would refuse to start).
        public var rlimits: [Rlimit]?
        public var noNewPrivileges = true
    }

    public struct User: Codable, Sendable, Equatable {
        public var uid: UInt32
        public var gid: UInt32
    }

    public struct Capabilities: Codable, Sendable, Equatable {
        public var bounding: [String]
        public var effective: [String]
        public var permitted: [String]
    }

    public struct Rlimit: Codable, Sendable, Equatable {
        public var type: String
        public var hard: UInt64
        public var soft: UInt64
    }

    public struct Root: Codable, Sendable, Equatable {
        public var path: String
        public var readonly: Bool

        public init(path: String, readonly: Bool) {
            self.path = path
            self.readonly = readonly
        }
    }

    public struct Mount: Codable, Sendable, Equatable {
        public var destination: String
        public var type: String
        public var source: String
        public var options: [String]

        public init(destination: String, type: String, source: String, options: [String]) {
            self.destination = destination
            self.type = type
            self.source = source
            self.options = options
        }
    }

    public struct Linux: Codable, Sendable, Equatable {
        public var cgroupsPath: String
        public var resources: Resources
        public var namespaces: [Namespace]
        public var maskedPaths: [String]
        public var readonlyPaths: [String]
        public var seccomp: Seccomp?
    }

    /// A seccomp filter (runtime-spec `linux.seccomp`).
    public struct Seccomp: Codable, Sendable, Equatable {
        public var defaultAction: String
        public var architectures: [String]
        public var syscalls: [SyscallRule]

        public struct SyscallRule: Codable, Sendable, Equatable {
            public var names: [String]
            public var action: String
            public var errnoRet: UInt32?
        }

        /// Every system call allowed except those that reach past the container: the kernel's keyring, modules
        /// and clock, other processes' memory, namespaces and mounts, tracing, reboot, swap, BPF and perf. They
        /// fail with EPERM. Docker's default profile blocks these (it lists what it allows instead; most of these
        /// also need capabilities a task does not have — the filter holds even for one that gets them).
        public static let `default` = Seccomp(
            defaultAction: "SCMP_ACT_ALLOW",
            architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            syscalls: [SyscallRule(
                names: [
                    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "delete_module", "finit_module", "init_module",
                    "iopl", "ioperm", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "move_mount",
                    "name_to_handle_at", "open_by_handle_at", "open_tree", "fsopen", "fsmount", "fspick", "perf_event_open",
                    "pivot_root", "process_vm_readv", "process_vm_writev", "quotactl", "reboot", "request_key",
                    "setns", "settimeofday", "swapon", "swapoff", "syslog", "umount2", "unshare", "userfaultfd", "uselib",
                ],
                action: "SCMP_ACT_ERRNO", errnoRet: 1)])
    }

    public struct Resources: Codable, Sendable, Equatable {
        public var devices: [DeviceRule]
        public var memory: Memory?
        public var cpu: CPU?
        public var pids: Pids?
    }

    public struct DeviceRule: Codable, Sendable, Equatable {
        public var allow: Bool
        public var access: String

        public init(allow: Bool, access: String) {
            self.allow = allow
            self.access = access
        }
    }

    public struct Memory: Codable, Sendable, Equatable {
        /// Bytes.
        public var limit: Int64
        /// Memory plus swap, bytes: equal to `limit`, so a container cannot swap past its limit.
        public var swap: Int64

        public init(limit: Int64, swap: Int64) {
            self.limit = limit
            self.swap = swap
        }
    }

    public struct CPU: Codable, Sendable, Equatable {
        /// Microseconds of CPU per period.
        public var quota: Int64
        public var period: UInt64
        /// Relative weight (cgroup v1 cpu.shares), from the reservation.
        public var shares: UInt64?

        public init(quota: Int64, period: UInt64, shares: UInt64?) {
            self.quota = quota
            self.period = period
            self.shares = shares
        }
    }

    public struct Pids: Codable, Sendable, Equatable {
        public var limit: Int64

        public init(limit: Int64) {
            self.limit = limit
        }
    }

    public struct Namespace: Codable, Sendable, Equatable {
        public var type: String
        /// Join this namespace instead of creating one (a network namespace the agent wired beforehand).
        public var path: String?

        public init(type: String, path: String?) {
            self.type = type
            self.path = path
        }
    }
}

/// Builds the bundle configuration for one task: what it runs (the image's entrypoint and command, overridden by
/// the spec), with what limits, in which namespaces and cgroup. Pure: paths and names come in as parameters.
public enum OCIRuntimeConfigBuilder {
    /// Docker's default capability set: enough for ordinary servers (bind low ports, change users, chown), none of
    /// the ones that reach the host (SYS_ADMIN, NET_ADMIN, SYS_MODULE, ...).
    public static let defaultCapabilities = [
        "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
    ]

    /// A period of 100 ms, as Docker uses: `--limit-cpu 0.5` is 50 ms of CPU per 100 ms.
    public static let cpuPeriodMicroseconds: UInt64 = 100_000

    /// Where the static init is bind-mounted inside the container: it runs as PID 1, forwards signals to the task's
    /// command and reaps zombies (most programs ignore SIGTERM as PID 1).
    public static let initPath = "/.flotilla-init"

    public struct Request: Sendable {
        public var taskID: String
        /// The command to run: the image's entrypoint + cmd, or the spec's command and args.
        public var args: [String]
        /// NAME=value, image defaults first, then the spec's, then Flotilla's (PORT, FLOTILLA_TASK_ID).
        public var env: [String]
        public var cwd: String
        public var uid: UInt32
        public var gid: UInt32
        /// The container's root file system (an overlay mount), absolute.
        public var rootfs: String
        public var readonlyRootfs: Bool
        public var hostname: String
        /// `/<node prefix>/<task>`: under the agent's own parent, so agents sharing a machine never clash.
        public var cgroupsPath: String
        /// The network namespace to join (`/var/run/netns/<name>`); nil: share the host's network.
        public var networkNamespacePath: String?
        /// Bytes; 0: no limit.
        public var memoryLimitBytes: UInt64
        /// Millicores; 0: no limit.
        public var cpuLimitMillis: UInt64
        /// Millicores reserved (relative weight); 0: the default weight.
        public var cpuReservationMillis: UInt64
        /// Processes; 0: no limit.
        public var pidsLimit: UInt64
        /// The static init on the host (catatonit), bind-mounted read-only; nil: run the command as PID 1.
        public var initBinary: String?
        /// A file on the host bind-mounted as the container's /etc/resolv.conf; nil: the image's own stays.
        public var resolvConf: String?

        public init(
            taskID: String, args: [String], env: [String], cwd: String = "/", uid: UInt32 = 0, gid: UInt32 = 0, rootfs: String,
            readonlyRootfs: Bool = false, hostname: String, cgroupsPath: String, networkNamespacePath: String?,
            memoryLimitBytes: UInt64 = 0, cpuLimitMillis: UInt64 = 0, cpuReservationMillis: UInt64 = 0, pidsLimit: UInt64 = 0,
            initBinary: String?, resolvConf: String? = nil
        ) {
            self.taskID = taskID
            self.args = args
            self.env = env
            self.cwd = cwd
            self.uid = uid
            self.gid = gid
            self.rootfs = rootfs
            self.readonlyRootfs = readonlyRootfs
            self.hostname = hostname
            self.cgroupsPath = cgroupsPath
            self.networkNamespacePath = networkNamespacePath
            self.memoryLimitBytes = memoryLimitBytes
            self.cpuLimitMillis = cpuLimitMillis
            self.cpuReservationMillis = cpuReservationMillis
            self.pidsLimit = pidsLimit
            self.initBinary = initBinary
            self.resolvConf = resolvConf
        }
    }

    public static func build(_ request: Request) -> OCIRuntimeConfig {
        var mounts = [
            OCIRuntimeConfig.Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
            OCIRuntimeConfig.Mount(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            OCIRuntimeConfig.Mount(
                destination: "/dev/pts", type: "devpts", source: "devpts",
                options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            OCIRuntimeConfig.Mount(destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            OCIRuntimeConfig.Mount(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            OCIRuntimeConfig.Mount(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
            OCIRuntimeConfig.Mount(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"]),
        ]
        var args = request.args
        if let initBinary = request.initBinary {
            mounts.append(OCIRuntimeConfig.Mount(destination: initPath, type: "bind", source: initBinary, options: ["bind", "ro"]))
            args = [initPath, "--"] + args
        }
        if let resolvConf = request.resolvConf {
            // Writable and with Docker's options: the file is the container's own copy.
            mounts.append(OCIRuntimeConfig.Mount(destination: "/etc/resolv.conf", type: "bind", source: resolvConf, options: ["rbind", "rprivate"]))
        }
        var namespaces = ["pid", "ipc", "uts", "mount"].map { OCIRuntimeConfig.Namespace(type: $0, path: nil) }
        if let path = request.networkNamespacePath {
            namespaces.append(OCIRuntimeConfig.Namespace(type: "network", path: path))
        }
        var resources = OCIRuntimeConfig.Resources(devices: [OCIRuntimeConfig.DeviceRule(allow: false, access: "rwm")])
        if request.memoryLimitBytes > 0 {
            let limit = Int64(clamping: request.memoryLimitBytes)
            resources.memory = OCIRuntimeConfig.Memory(limit: limit, swap: limit)
        }
        if request.cpuLimitMillis > 0 || request.cpuReservationMillis > 0 {
            resources.cpu = OCIRuntimeConfig.CPU(
                quota: request.cpuLimitMillis > 0 ? Int64(clamping: request.cpuLimitMillis * cpuPeriodMicroseconds / 1_000) : -1,
                period: cpuPeriodMicroseconds,
                // cgroup v1 shares: 1024 per core, at least 2.
                shares: request.cpuReservationMillis > 0 ? max(2, request.cpuReservationMillis * 1_024 / 1_000) : nil)
        }
        if request.pidsLimit > 0 { resources.pids = OCIRuntimeConfig.Pids(limit: Int64(clamping: request.pidsLimit)) }
        return OCIRuntimeConfig(
            process: OCIRuntimeConfig.Process(
                user: OCIRuntimeConfig.User(uid: request.uid, gid: request.gid), args: args, env: request.env, cwd: request.cwd,
                capabilities: OCIRuntimeConfig.Capabilities(
                    bounding: defaultCapabilities, effective: defaultCapabilities, permitted: defaultCapabilities),
                rlimits: nil),
            root: OCIRuntimeConfig.Root(path: request.rootfs, readonly: request.readonlyRootfs),
            hostname: request.hostname,
            mounts: mounts,
            linux: OCIRuntimeConfig.Linux(
                cgroupsPath: request.cgroupsPath, resources: resources, namespaces: namespaces,
                maskedPaths: [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                ],
                readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
                seccomp: .default))
    }
}

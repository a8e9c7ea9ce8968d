import Foundation

/// Which low-level OCI runtime the agent drives: crun (fastest) or runc, as `--runtime` asks or, by default, the
/// best one that works on this host.
///
/// crun refuses to run while the cgroup v2 hierarchy of a hybrid host holds a controller ("cgroups in hybrid
/// mode not supported"); moving that controller to a v1 mount fixes it (see `HybridCgroups`). When it cannot be
/// fixed, auto-detection falls back to runc, which does not mind.
public struct OCIRuntimeChoice: Sendable, Equatable {
    public let name: String
    public let binary: String
    /// Why this one, for the agent's log.
    public let reason: String

    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        case unknownRuntime(String)
        case notInstalled(String)
        case noneInstalled
        case crunBlockedByHybridCgroups(controllers: [String])

        public var description: String {
            switch self {
            case .unknownRuntime(let name):
                "--runtime \(name) is not a runtime Flotilla drives; use crun or runc (or leave it out to detect one)"
            case .notInstalled(let name):
                "--runtime \(name) was asked for but no \(name) binary is on PATH; install it (apt-get install \(name))"
            case .noneInstalled:
                "neither crun nor runc is installed; install one (apt-get install crun) or run services with --driver process"
            case .crunBlockedByHybridCgroups(let controllers):
                "crun cannot run here: the cgroup v2 hierarchy of this hybrid host holds \(controllers.joined(separator: ", ")), "
                    + "and moving it to a v1 mount failed; run the agent as root, or use --runtime runc"
            }
        }
    }

    /// The decision, from what is installed and what the cgroup v2 hierarchy still holds (after any fix).
    public static func choose(
        preferred: String?, installed: [String: String], hybridControllersLeft: [String]
    ) -> Result<OCIRuntimeChoice, Problem> {
        let crunWorks = hybridControllersLeft.isEmpty
        switch preferred {
        case "crun":
            guard let binary = installed["crun"] else { return .failure(.notInstalled("crun")) }
            guard crunWorks else { return .failure(.crunBlockedByHybridCgroups(controllers: hybridControllersLeft)) }
            return .success(OCIRuntimeChoice(name: "crun", binary: binary, reason: "asked for with --runtime"))
        case "runc":
            guard let binary = installed["runc"] else { return .failure(.notInstalled("runc")) }
            return .success(OCIRuntimeChoice(name: "runc", binary: binary, reason: "asked for with --runtime"))
        case let other?:
            return .failure(.unknownRuntime(other))
        case nil:
            if let binary = installed["crun"], crunWorks {
                return .success(OCIRuntimeChoice(name: "crun", binary: binary, reason: "detected (the fastest available)"))
            }
            if let binary = installed["runc"] {
                let why = installed["crun"] == nil ? "detected (crun is not installed)"
                    : "detected (crun cannot run with \(hybridControllersLeft.joined(separator: ", ")) in the cgroup v2 hierarchy)"
                return .success(OCIRuntimeChoice(name: "runc", binary: binary, reason: why))
            }
            if installed["crun"] != nil { return .failure(.crunBlockedByHybridCgroups(controllers: hybridControllersLeft)) }
            return .failure(.noneInstalled)
        }
    }

    /// Finds `name` on `path` (default: PATH), then in the usual system directories.
    public static func which(_ name: String, path: String? = nil) -> String? {
        let directories = (path ?? ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        for directory in directories {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// The host's hybrid cgroup layout: v1 controllers under /sys/fs/cgroup/<controller>, and a cgroup v2 hierarchy
/// at /sys/fs/cgroup/unified whose `cgroup.controllers` should be empty for crun to run.
public enum HybridCgroups {
    public static let unifiedControllers = "/sys/fs/cgroup/unified/cgroup.controllers"

    /// Controllers the v2 hierarchy holds (empty on a pure v1 or pure v2 host, where crun is happy).
    public static func controllersInUnified(file: String = unifiedControllers) -> [String] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(whereSeparator: \.isWhitespace).map(String.init)
    }

    /// Moves each controller the v2 hierarchy holds to its own v1 mount (what the host's init would have done),
    /// as root; returns the controllers still left there.
    public static func moveToV1(root: String = "/sys/fs/cgroup") -> [String] {
        for controller in controllersInUnified(file: root + "/unified/cgroup.controllers") {
            let mountPoint = root + "/" + controller
            try? FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            _ = mount("cgroup", mountPoint, "cgroup", 0, controller)
        }
        return controllersInUnified(file: root + "/unified/cgroup.controllers")
    }
}

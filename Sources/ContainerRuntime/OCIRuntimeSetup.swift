import ClusterModel
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Sets up the OCI driver for an agent: picks crun or runc (moving a controller out of the cgroup v2 hierarchy
/// first when crun needs it), stores images under the agent's data directory (pulled from registries, or read
/// from OCI layouts and archives), and names everything after the node so several agents can share a machine.
/// Returns why not when it cannot (not root, no runtime): the agent then runs process-driver tasks only, and OCI
/// tasks fail saying so.
public enum OCIRuntimeSetup {
    /// Why the OCI driver could not be set up, for the agent's log.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// `runDirectory`: where the runtime keeps its state (tmpfs `/run`: containers do not survive a reboot).
    /// `registries`: how images are pulled (insecure registries from `--insecure-registry`, credentials; HTTPS
    /// with the system trust store and anonymous access by default).
    public static func make(
        preferred: String?, dataDirectory: String, nodeID: String, runDirectory: String = "/run",
        registries: RegistryConfiguration = RegistryConfiguration()
    ) -> Result<OCIDriver, OCIRuntimeSetup.Failure> {
        guard getuid() == 0 else { return .failure(.init("the OCI driver needs root (mounts, cgroups, namespaces)")) }
        var installed: [String: String] = [:]
        for name in ["crun", "runc"] { installed[name] = OCIRuntimeChoice.which(name) }
        let left = installed["crun"] != nil && preferred != "runc" ? HybridCgroups.moveToV1() : HybridCgroups.controllersInUnified()
        let choice: OCIRuntimeChoice
        switch OCIRuntimeChoice.choose(preferred: preferred, installed: installed, hybridControllersLeft: left) {
        case .success(let chosen): choice = chosen
        case .failure(let problem): return .failure(.init(problem.description))
        }
        do {
            let images = try ImageStore(root: dataDirectory + "/images", registries: registries)
            let driver = try OCIDriver(
                runtime: choice, stateRoot: "\(runDirectory)/flotilla-\(nodeID)/\(choice.name)", bundles: dataDirectory + "/bundles",
                cgroupParent: "flotilla-\(nodeID)", initBinary: OCIRuntimeChoice.which("catatonit"),
                networking: ContainerNetwork(node: NodeID(nodeID)), imageStore: images
            ) { launch in
                let image = try await images.prepare(reference: launch.spec.image)
                return (image.rootfs, image.config)
            }
            return .success(driver)
        } catch {
            return .failure(.init("\(error)"))
        }
    }
}

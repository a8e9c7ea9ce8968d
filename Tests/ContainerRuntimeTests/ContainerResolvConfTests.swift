import ClusterModel
@testable import ContainerRuntime
import Foundation
import Testing
import TestSupport

/// How a container finds services by name: on the bridge network its /etc/resolv.conf names the node's DNS
/// responder at the gateway and searches the cluster domain; sharing the host's network, it gets the host's.
@Suite("Container runtime: a container's resolv.conf")
struct ContainerResolvConfTests {
    @Test("on the bridge network: the gateway as nameserver, the cluster domain searched, ndots:1")
    func bridgeNetwork() throws {
        let bundle = try TemporaryDirectory()
        let path = try #require(try OCIDriver.writeResolvConf(bundle: bundle.path, gateway: IPv4Address("10.240.3.1")!))
        #expect(path == bundle.path + "/resolv.conf")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text == "nameserver 10.240.3.1\nsearch flotilla.internal\noptions ndots:1\n")
        #expect(text == ServiceDiscovery.resolvConf(nameserver: IPv4Address("10.240.3.1")!))
    }

    @Test("sharing the host's network: a copy of the host's resolv.conf; without one, the image's stays")
    func hostNetwork() throws {
        let bundle = try TemporaryDirectory()
        let host = bundle.path + "/host-resolv.conf"
        try "nameserver 192.0.2.53\nsearch example.net\n".write(toFile: host, atomically: true, encoding: .utf8)
        let path = try #require(try OCIDriver.writeResolvConf(bundle: bundle.path, gateway: nil, hostResolvConf: host))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "nameserver 192.0.2.53\nsearch example.net\n")
        #expect(try OCIDriver.writeResolvConf(bundle: bundle.path, gateway: nil, hostResolvConf: host + ".missing") == nil)
    }

    @Test("the file is bind-mounted as /etc/resolv.conf (writable, the container's own copy); without one, nothing is")
    func mount() {
        var request = OCIRuntimeConfigBuilder.Request(
            taskID: "t1", args: ["sh"], env: [], rootfs: "/bundles/flt-t1/rootfs", hostname: "t1", cgroupsPath: "/flotilla-n1/flt-t1",
            networkNamespacePath: "/run/netns/f123456-t1", initBinary: nil, resolvConf: "/bundles/flt-t1/resolv.conf")
        let config = OCIRuntimeConfigBuilder.build(request)
        #expect(config.mounts.filter { $0.destination == "/etc/resolv.conf" } == [
            OCIRuntimeConfig.Mount(destination: "/etc/resolv.conf", type: "bind", source: "/bundles/flt-t1/resolv.conf", options: ["rbind", "rprivate"]),
        ])
        request.resolvConf = nil
        #expect(!OCIRuntimeConfigBuilder.build(request).mounts.contains { $0.destination == "/etc/resolv.conf" })
    }
}

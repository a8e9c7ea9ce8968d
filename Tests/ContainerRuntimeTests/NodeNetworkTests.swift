import ClusterModel
@testable import ContainerRuntime
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The node network for real: bridges, veths, namespaces, routes and nftables in lab namespaces standing in for
/// hosts (`NetworkLab`). Needs root, iproute2, nftables and busybox-static (CI installs them); skipped without.
@Suite("Node network: bridge, task namespaces, routes between nodes", .enabled(if: NetworkLab.available, "needs root (CAP_NET_ADMIN), ip (iproute2), nft (nftables) and /bin/busybox"))
struct NodeNetworkTests {
    static let cluster = try! IPv4Subnet(parsing: "10.240.0.0/16")

    static func network(_ lab: NetworkLab, _ letter: Character, host: Int) throws -> NodeNetwork {
        try NodeNetwork(.init(prefix: lab.nodePrefix(letter), cluster: cluster, hostNamespace: lab.host(host)))
    }

    /// Nothing of `network` is left in its host namespace or among the machine's network namespaces.
    static func expectClean(_ network: NodeNetwork, host: String) async throws {
        let prefix = network.configuration.prefix
        #expect(try await NetworkLab.leftovers(containing: prefix, in: host) == [], "nothing named \(prefix)… is left")
        #expect(try await NetworkLab.ownRoutes(in: host) == [], "no node routes are left")
    }

    @Test("set up, attach and detach, tear down: each may run twice, the host reaches the task, nothing is left")
    func lifecycle() async throws {
        try await NetworkLab.with(hosts: 1) { lab in
            let host = lab.host(1)
            let network = try Self.network(lab, "a", host: 1)
            let subnet = try IPv4Subnet(parsing: "10.240.1.0/24")
            try await network.setUp(subnet: subnet)
            try await network.setUp(subnet: subnet)
            #expect(try await NetworkLab.ip("-n", host, "-o", "-4", "address", "show", "dev", network.bridge).contains("10.240.1.1/24"))
            #expect(try await NetworkLab.run(NetworkLab.ip, ["netns", "exec", host, "cat", "/proc/sys/net/ipv4/ip_forward"]) == "1")
            let ruleset = try await NetworkLab.run(NetworkLab.ip, ["netns", "exec", host, "nft", "list", "table", "ip", network.table])
            #expect(ruleset.contains("ip saddr 10.240.1.0/24 ip daddr != 10.240.0.0/16"))
            #expect(ruleset.contains("masquerade"))

            let address = IPv4Address("10.240.1.2")!
            let first = try await network.attach(taskID: "t-web1", address: address)
            let again = try await network.attach(taskID: "t-web1", address: address)
            #expect(first == again)
            #expect(first.namespacePath == "/run/netns/\(lab.nodePrefix("a"))-t-web1")
            #expect(first.hostInterface == "\(lab.nodePrefix("a"))v2")
            let namespace = network.namespaceName("t-web1")
            #expect(try await NetworkLab.ip("-n", namespace, "-o", "-4", "address", "show", "dev", "eth0").contains("10.240.1.2/24"))
            #expect(try await NetworkLab.ip("-n", namespace, "route", "show", "default").contains("via 10.240.1.1"))
            #expect(try await NetworkLab.ip("-n", host, "-o", "link", "show", "dev", first.hostInterface).contains("master \(network.bridge)"))
            #expect(try await network.attachments() == ["t-web1": address])

            try lab.serve(in: namespace, address: "10.240.1.2", text: "task t-web1")
            #expect(try await NetworkLab.eventuallyFetch(from: host, address: "10.240.1.2") == "task t-web1", "the host reaches its task")
            // A second task on the same bridge reaches the first.
            _ = try await network.attach(taskID: "t-web2", address: IPv4Address("10.240.1.3")!)
            #expect(try await NetworkLab.eventuallyFetch(from: network.namespaceName("t-web2"), address: "10.240.1.2") == "task t-web1")
            // A new task's namespace is set up in one go; an interface a crash left under its veth's name goes first.
            try await NetworkLab.ip("-n", host, "link", "add", "name", "\(lab.nodePrefix("a"))v4", "type", "veth", "peer", "name", "\(lab.nodePrefix("a"))x4")
            let third = try await network.attach(taskID: "t-web3", address: IPv4Address("10.240.1.4")!)
            #expect(try await NetworkLab.ip("-n", host, "-o", "link", "show", "dev", third.hostInterface).contains("master \(network.bridge)"))
            #expect(try await NetworkLab.ip("-n", network.namespaceName("t-web3"), "-o", "-4", "address", "show", "dev", "eth0").contains("10.240.1.4/24"))
            #expect(try await NetworkLab.eventuallyFetch(from: network.namespaceName("t-web3"), address: "10.240.1.2") == "task t-web1")

            try await network.detach(taskID: "t-web1")
            try await network.detach(taskID: "t-web1")
            #expect(try await network.attachments().keys.sorted() == ["t-web2", "t-web3"])
            try await network.tearDown()
            try await network.tearDown()
            try await Self.expectClean(network, host: host)
        }
    }

    @Test("a sweep after a crash removes every namespace and veth of tasks that should not exist, and keeps the rest")
    func sweepAfterCrash() async throws {
        try await NetworkLab.with(hosts: 1) { lab in
            let host = lab.host(1)
            let subnet = try IPv4Subnet(parsing: "10.240.7.0/24")
            let before = try Self.network(lab, "a", host: 1)
            try await before.setUp(subnet: subnet)
            for (index, task) in ["t-keep", "t-gone1", "t-gone2"].enumerated() {
                _ = try await before.attach(taskID: task, address: IPv4Address("10.240.7.\(index + 2)")!)
            }
            // What a crash mid-attach leaves: a namespace without a veth, and a veth without its namespace's name.
            let prefix = lab.nodePrefix("a")
            try await NetworkLab.ip("netns", "add", "\(prefix)-t-half")
            try await NetworkLab.ip("-n", host, "link", "add", "name", "\(prefix)vff", "type", "veth", "peer", "name", "stray")
            try await NetworkLab.ip("-n", host, "link", "set", "dev", "\(prefix)vff", "alias", "t-lost")
            // Another node's names on the same host are not this node's to remove.
            let neighbour = try Self.network(lab, "b", host: 1)
            try await neighbour.setUp(subnet: try IPv4Subnet(parsing: "10.240.8.0/24"))
            _ = try await neighbour.attach(taskID: "t-gone1", address: IPv4Address("10.240.8.2")!)

            // The agent restarts: a new NodeNetwork, set up again, sweeps with the tasks it should run.
            let after = try Self.network(lab, "a", host: 1)
            try await after.setUp(subnet: subnet)
            let swept = try await after.sweep(keeping: ["t-keep"])
            #expect(swept.namespaces.sorted() == ["\(prefix)-t-gone1", "\(prefix)-t-gone2", "\(prefix)-t-half"])
            #expect(swept.interfaces.sorted() == ["\(prefix)v3", "\(prefix)v4", "\(prefix)vff"])
            #expect(try await after.attachments() == ["t-keep": IPv4Address("10.240.7.2")!])
            #expect(try await NetworkLab.ip("-n", host, "-o", "link", "show").contains("\(prefix)v2"))
            #expect(try await neighbour.attachments() == ["t-gone1": IPv4Address("10.240.8.2")!])
            // Re-attaching the kept task changes nothing (a running container is not disturbed).
            let index = try await NetworkLab.ip("-n", host, "-o", "link", "show", "dev", "\(prefix)v2").prefix { $0 != ":" }
            _ = try await after.attach(taskID: "t-keep", address: IPv4Address("10.240.7.2")!)
            #expect(try await NetworkLab.ip("-n", host, "-o", "link", "show", "dev", "\(prefix)v2").prefix { $0 != ":" } == index)

            try await after.tearDown()
            try await Self.expectClean(after, host: host)
            try await neighbour.tearDown()
            try await Self.expectClean(neighbour, host: host)
        }
    }

    @Test("a task on one node reaches a task on another through the node routes, and so does the node itself")
    func crossNode() async throws {
        try await NetworkLab.with(hosts: 2) { lab in
            let (hostA, hostB) = (lab.host(1), lab.host(2))
            let a = try Self.network(lab, "a", host: 1)
            let b = try Self.network(lab, "b", host: 2)
            let (subnetA, subnetB) = (try IPv4Subnet(parsing: "10.240.1.0/24"), try IPv4Subnet(parsing: "10.240.2.0/24"))
            try await a.setUp(subnet: subnetA)
            try await b.setUp(subnet: subnetB)
            // Every node is given every node (its own subnet is skipped).
            let routes = [
                NodeNetwork.Route(subnet: subnetA, via: IPv4Address(lab.hostAddress(1))!),
                NodeNetwork.Route(subnet: subnetB, via: IPv4Address(lab.hostAddress(2))!),
            ]
            try await a.setRoutes(routes)
            try await a.setRoutes(routes)
            try await b.setRoutes(routes)
            #expect(try await NetworkLab.ownRoutes(in: hostA) == ["10.240.2.0/24 via \(lab.hostAddress(2)) dev up0 src 10.240.1.1"])

            let taskA = try await a.attach(taskID: "t-a", address: IPv4Address("10.240.1.2")!)
            let taskB = try await b.attach(taskID: "t-b", address: IPv4Address("10.240.2.2")!)
            try lab.serve(in: a.namespaceName("t-a"), address: "\(taskA.address)", text: "hello from A")
            try lab.serve(in: b.namespaceName("t-b"), address: "\(taskB.address)", text: "hello from B")

            #expect(try await NetworkLab.eventuallyFetch(from: a.namespaceName("t-a"), address: "10.240.2.2") == "hello from B", "task A → task B")
            #expect(try await NetworkLab.eventuallyFetch(from: b.namespaceName("t-b"), address: "10.240.1.2") == "hello from A", "task B → task A")
            #expect(try await NetworkLab.eventuallyFetch(from: hostA, address: "10.240.2.2") == "hello from B", "node A → task B")

            // Beyond the cluster range, a task's traffic leaves with its node's address (masquerade).
            try lab.serve(in: hostB, address: lab.hostAddress(2), port: 8081, text: "host B")
            #expect(try await NetworkLab.eventuallyFetch(from: a.namespaceName("t-a"), address: lab.hostAddress(2), port: 8081) == "host B")
            let postrouting = try await NetworkLab.run(NetworkLab.ip, ["netns", "exec", hostA, "nft", "list", "chain", "ip", a.table, "postrouting"])
            #expect(!postrouting.contains("counter packets 0 "), "the masquerade rule counted the connection:\n\(postrouting)")

            // Routes follow the set given: without B's, A's task cannot reach B's.
            try await a.setRoutes([])
            #expect(try await NetworkLab.ownRoutes(in: hostA) == [])
            #expect(await NetworkLab.fetch(from: a.namespaceName("t-a"), address: "10.240.2.2", timeoutSeconds: 1) == nil)

            try await a.tearDown()
            try await b.tearDown()
            try await Self.expectClean(a, host: hostA)
            try await Self.expectClean(b, host: hostB)
        }
    }

    @Test("bad input is refused saying why: attach before setUp, foreign addresses and subnets, bad task ids and prefixes")
    func badInput() async throws {
        #expect(throws: NodeNetworkError.self) { try NodeNetwork(.init(prefix: "toolong12", cluster: Self.cluster)) }
        #expect(throws: NodeNetworkError.self) { try NodeNetwork(.init(prefix: "Fa-1", cluster: Self.cluster)) }
        #expect(throws: NodeNetworkError.self) { try NodeNetwork(.init(prefix: "", cluster: Self.cluster)) }
        #expect(NodeNetwork.prefix(for: NodeID("k3v9q2m7x1c4b8n5")).count == 7)
        #expect(NodeNetwork.prefix(for: NodeID("k3v9q2m7x1c4b8n5")) == NodeNetwork.prefix(for: NodeID("k3v9q2m7x1c4b8n5")))
        let network = try NodeNetwork(.init(prefix: "nbad", cluster: Self.cluster))
        await #expect(throws: NodeNetworkError(.notSetUp, "the node network nbad is not set up: call setUp(subnet:) first")) {
            _ = try await network.attach(taskID: "t-1", address: IPv4Address("10.240.1.2")!)
        }
        await #expect(throws: NodeNetworkError.self) { try await network.setUp(subnet: try IPv4Subnet(parsing: "10.9.0.0/24")) }
        await #expect(throws: NodeNetworkError.self) { try await network.detach(taskID: "../etc") }
    }
}

/// A real container (busybox httpd under catatonit, run by crun and by runc) whose config.json joins the
/// namespace `NodeNetwork.attach` made, answering its node at its task address. Needs what `NodeNetworkTests`
/// and `OCIRuntimeRunTests` need.
@Suite("Node network: a container in its task namespace", .serialized, .enabled(if: NetworkLab.available && OCIRuntimeRunTests.available, "needs root, ip, nft, busybox-static, catatonit and crun or runc"))
struct NodeNetworkContainerTests {
    /// Removes the (empty) cgroup `name` from every hierarchy: the runtimes remove each container's cgroup, the
    /// parent is the test's to remove.
    static func removeCgroups(named name: String) {
        for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            rmdir("/sys/fs/cgroup/\(hierarchy)/\(name)")
        }
    }

    @Test("a container joins its task namespace by path and serves its node at its task address")
    func containerReachable() async throws {
        let runtimes = OCIRuntimeRunTests.runtimes()
        #expect(!runtimes.isEmpty, "neither crun nor runc can run here")
        print("runtimes under test: \(runtimes.map(\.name))")
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer { Self.removeCgroups(named: parent) }
        try await NetworkLab.with(hosts: 1) { lab in
            let host = lab.host(1)
            let network = try NodeNetworkTests.network(lab, "a", host: 1)
            try await network.setUp(subnet: try IPv4Subnet(parsing: "10.240.3.0/24"))
            for (index, runtime) in runtimes.enumerated() {
                let id = "t-\(runtime.name)-\(lab.id)"
                let attachment = try await network.attach(taskID: id, address: IPv4Address("10.240.3.\(index + 2)")!)
                let bundle = try OCIRuntimeRunTests.bundle()
                defer { try? FileManager.default.removeItem(atPath: bundle) }
                try FileManager.default.createSymbolicLink(atPath: bundle + "/rootfs/bin/httpd", withDestinationPath: "busybox")
                try FileManager.default.createDirectory(atPath: bundle + "/rootfs/www", withIntermediateDirectories: true)
                try "container \(runtime.name)".write(toFile: bundle + "/rootfs/www/index.html", atomically: true, encoding: .utf8)
                let config = OCIRuntimeConfigBuilder.build(.init(
                    taskID: id, args: ["httpd", "-f", "-p", "8080", "-h", "/www"], env: ["PATH=/bin"], rootfs: bundle + "/rootfs",
                    readonlyRootfs: true, hostname: id, cgroupsPath: "/\(parent)/\(id)",
                    networkNamespacePath: attachment.namespacePath, pidsLimit: 20, initBinary: "/usr/bin/catatonit"))
                try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: bundle + "/config.json"))
                let state = bundle + "/state"
                let started = try await HostProcess.run(runtime.binary, ["--root", state, "run", "--detach", "--bundle", bundle, id])
                #expect(started.status == 0, "\(runtime.name): \(started.output)")
                let answer = try await NetworkLab.eventuallyFetch(from: host, address: "\(attachment.address)")
                _ = try? await HostProcess.run(runtime.binary, ["--root", state, "delete", "--force", id])
                #expect(answer == "container \(runtime.name)", "\(runtime.name): the node reaches the container at \(attachment.address)")
                try await network.detach(taskID: id)
            }
            try await network.tearDown()
            try await NodeNetworkTests.expectClean(network, host: host)
        }
    }
}

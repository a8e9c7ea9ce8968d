@testable import ContainerRuntime
import Foundation
import Messages
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The demo image of the quickstart (deploy/images/build-demo.sh), built by its script, imported like any
/// `oci:` reference and run by the OCI driver with each runtime on the host's network: it answers with its
/// task id and node name. Needs what the OCI driver tests need (root, catatonit, busybox-static, crun or runc)
/// and python3, which the script uses.
@Suite("Container runtime: the demo image", .serialized)
struct DemoImageTests {
    static var available: Bool {
        OCIRuntimeRunTests.available && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
    }

    /// deploy/images/build-demo.sh in this checkout.
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy/images/build-demo.sh").path

    /// What GET http://127.0.0.1:PORT/ answers (busybox wget; `timeout` because its -T crashes); nil on failure.
    static func get(port: Int) async -> String? {
        let result = try? await HostProcess.run(
            "/usr/bin/timeout", ["2", "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:\(port)/"])
        return result?.status == 0 ? result?.output : nil
    }

    @Test("the script builds the same image twice, and its server answers with the task id and node name under crun and runc", .enabled(if: available))
    func demoImage() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-demo-image")
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)")
            }
        }
        // Deterministic: the same busybox gives the same layout, byte for byte.
        for layout in ["image", "again"] {
            let built = try await HostProcess.run(Self.script, [work.path + "/" + layout, "7"])
            try #require(built.status == 0, "build-demo.sh: \(built.output)")
        }
        let index = try String(contentsOfFile: work.path + "/image/index.json", encoding: .utf8)
        #expect(index == (try String(contentsOfFile: work.path + "/again/index.json", encoding: .utf8)), "same input, same digests")

        let images = try ImageStore(root: work.path + "/images")
        let runtimes = OCIRuntimeRunTests.runtimes()
        #expect(!runtimes.isEmpty, "neither crun nor runc can run here")
        for runtime in runtimes {
            let driver = try OCIDriver(
                runtime: runtime, stateRoot: work.path + "/\(runtime.name)-state", bundles: work.path + "/\(runtime.name)-bundles",
                cgroupParent: parent, initBinary: "/usr/bin/catatonit"
            ) { launch in
                let image = try await images.prepare(reference: launch.spec.image)
                return (image.rootfs, image.config)
            }
            var spec = Flotilla_V1_ServiceSpec()
            spec.driver = "oci"
            spec.image = "oci:\(work.path)/image:7"
            let taskID = "demo-\(runtime.name)-\(UInt16.random(in: 1...UInt16.max))"
            let port = try #require(ProcessDriver.freePort())
            let launch = TaskLaunch(taskID: taskID, serviceName: "hello", spec: spec, environment: ["FLOTILLA_NODE": "node-x"], port: port)
            try await driver.prepare(launch)
            let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
            let handle = try await driver.start(launch) { exit in
                exits.continuation.yield(exit)
                exits.continuation.finish()
            }
            // Nothing throws until the container is stopped.
            let answers = Mutex<[String]>([])
            let answered = (try? await eventually(timeout: .seconds(10), interval: .milliseconds(50)) {
                guard let body = await Self.get(port: port) else { return false }
                answers.withLock { $0.append(body) }
                return answers.withLock { $0.count } == 2
            }) ?? false
            let ended = Flag()
            async let stopped: Void = driver.stop(handle, grace: .seconds(5)) { ended.value }
            let exit = await withTimeout(.seconds(20)) { await exits.stream.first { _ in true } } ?? nil
            ended.set()
            await stopped

            #expect(answered, "\(runtime.name): no answer on port \(port)")
            #expect(answers.withLock { $0 } == [
                "hello from task \(taskID) on node node-x (request 1)", "hello from task \(taskID) on node node-x (request 2)",
            ], "\(runtime.name)")
            #expect(exit != nil, "\(runtime.name): the container stopped")
            #expect(try FileManager.default.contentsOfDirectory(atPath: work.path + "/\(runtime.name)-bundles").isEmpty, "bundles removed")
        }
    }
}

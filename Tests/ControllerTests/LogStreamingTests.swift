import AdminClient
import ClusterModel
import Foundation
import Messages
import Synchronization
import TestSupport
import Testing
import Transport
import Wire

/// `service logs` and `task logs` end to end: three controllers, three in-process agents capturing their tasks'
/// output (real processes), the leader's broker merging what the agents publish.
@Suite("Task logs through the leader", .serialized)
struct LogStreamingTests {
    /// Lines and notices a stream delivered, from the task reading it.
    final class Collected: Sendable {
        private let state = Mutex<(lines: [Flotilla_V1_LogLine], notices: [String])>(([], []))
        func add(_ batch: Flotilla_V1_TaskLogsResponse) {
            state.withLock {
                $0.lines += batch.lines
                $0.notices += batch.notices
            }
        }
        var lines: [Flotilla_V1_LogLine] { state.withLock { $0.lines } }
        var notices: [String] { state.withLock { $0.notices } }
        var texts: Set<String> { Set(lines.map(\.text)) }
    }

    static func read(_ admin: AdminClient, _ request: Flotilla_V1_TaskLogsRequest) async throws -> Collected {
        let collected = Collected()
        try await admin.taskLogs(request) { collected.add($0) }
        return collected
    }

    static func request(service: String = "", task: String = "", follow: Bool = false, tail: UInt32? = nil) -> Flotilla_V1_TaskLogsRequest {
        var request = Flotilla_V1_TaskLogsRequest()
        request.service = service
        request.taskID = task
        request.follow = follow
        if let tail { request.tail = tail }
        return request
    }

    @Test("service logs: every replica's lines tagged with task and node, tail, one task, follow, a down node, unknown and removed services")
    func serviceLogs() async throws {
        let directory = try TemporaryDirectory(prefix: "flotilla-logs")
        let flag = directory.path + "/go"
        let started = try await ControllerClusterTests.startThree(directory.path + "/controllers")
        let controllers = started.0
        let addresses = controllers.map(\.server.localAddress)
        var admin: AdminClient?
        var agents = InProcessAgents()
        do {
            // A follower first: the log call is redirected to the leader like any leader-only call.
            let leader = try #require(await ControllerClusterTests.leader(controllers)).server.localAddress
            let followerFirst = addresses.filter { $0 != leader } + [leader]
            let client = try await AdminClient.connect(to: followerFirst, credentials: started.1)
            admin = client
            agents = try await InProcessAgents.start(["n1", "n2", "n3"], controllers: addresses, admin: client, logs: directory.path + "/agents")
            let running = agents
            #expect(try await eventually(timeout: .seconds(15)) { (try? await client.nodeList())?.filter { $0.status == "ready" }.count == 3 })

            let command = "echo hello $FLOTILLA_TASK_ID; echo oops $FLOTILLA_TASK_ID >&2; "
                + "while [ ! -f \(flag) ]; do sleep 0.05; done; echo late $FLOTILLA_TASK_ID; exec sleep 300"
            _ = try await client.serviceCreate(.process("talk", command: command, replicas: 3, monitorMs: 300))
            #expect(try await eventually(timeout: .seconds(20)) {
                await ServiceLifecycleTests.settled(client, "talk", count: 3, agents: running)
            })
            let inspected = try await client.serviceInspect("talk")
            let tasks = inspected.tasks.filter { $0.desiredState == .running }
            #expect(Set(tasks.map(\.nodeID)).count == 3)
            let expected = Set(tasks.flatMap { ["hello \($0.id)", "oops \($0.id)"] })

            // Every replica's lines, each tagged with its task and the node it runs on.
            #expect(try await eventually(timeout: .seconds(10)) {
                expected.isSubset(of: try await Self.read(client, Self.request(service: "talk")).texts)
            })
            let all = try await Self.read(client, Self.request(service: "talk"))
            #expect(all.lines.count == 6 && all.notices.isEmpty, "\(all.lines.map(\.text)) \(all.notices)")
            for line in all.lines {
                let task = try #require(tasks.first { $0.id == line.taskID })
                #expect(line.text.hasSuffix(task.id))
                #expect(line.nodeID == task.nodeID)
                #expect(line.nodeName == inspected.nodeNames[task.nodeID])
                #expect(line.stream == (line.text.hasPrefix("oops") ? .stderr : .stdout))
                #expect(line.timeUnixNano > 0)
            }
            // --tail 1: the last line of each task.
            let tailed = try await Self.read(client, Self.request(service: "talk", tail: 1))
            #expect(tailed.texts == Set(tasks.map { "oops \($0.id)" }))
            // One task.
            let one = try #require(tasks.first)
            let single = try await Self.read(client, Self.request(task: one.id))
            #expect(single.texts == ["hello \(one.id)", "oops \(one.id)"])

            // --follow: lines written after the call started arrive; cancelling ends the stream.
            let followed = Collected()
            let follower = Task { try await client.taskLogs(Self.request(service: "talk", follow: true)) { followed.add($0) } }
            #expect(try await eventually(timeout: .seconds(10)) { expected.isSubset(of: followed.texts) }, "the stream is live")
            FileManager.default.createFile(atPath: flag, contents: nil)
            let late = Set(tasks.map { "late \($0.id)" })
            #expect(try await eventually(timeout: .seconds(10)) { late.isSubset(of: followed.texts) })
            follower.cancel()
            _ = try? await follower.value
            #expect(followed.lines.count == 9, "no line twice: \(followed.lines.map(\.text))")

            // A node that is down is named instead of holding the stream.
            let downNode = try #require(tasks.last?.nodeID)
            let downName = try #require(inspected.nodeNames[downNode])
            let downIndex = try #require(agents.names.firstIndex(of: downName))
            agents.sessions[downIndex].cancel()
            #expect(try await eventually(timeout: .seconds(15)) {
                (try? await client.nodeList())?.first { $0.id == downNode }?.status == "down"
            })
            let partial = try await Self.read(client, Self.request(service: "talk"))
            #expect(partial.notices.contains { $0.contains("node \(downName) is down") }, "\(partial.notices)")
            #expect(!partial.lines.contains { $0.nodeID == downNode })
            #expect(partial.lines.contains { $0.text == "late \(one.id)" })

            // Unknown and removed services: NOT_FOUND, which the CLI shows as an error (exit 1).
            await #expect { try await Self.read(client, Self.request(service: "nope")) } throws: { error in
                (error as? RPCError)?.code == .notFound && (error as? RPCError)?.message.contains("no service named 'nope'") == true
            }
            _ = try await client.serviceRemove("talk")
            await #expect { try await Self.read(client, Self.request(service: "talk")) } throws: { error in
                (error as? RPCError)?.code == .notFound
            }
        } catch {
            await admin?.close()
            await agents.stop()
            for running in controllers { await ControllerClusterTests.stop(running) }
            throw error
        }
        await admin?.close()
        await agents.stop()
        for running in controllers { await ControllerClusterTests.stop(running) }
    }
}

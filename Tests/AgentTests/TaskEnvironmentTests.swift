@testable import Agent
import Foundation
import Messages
import TestSupport
import Testing

/// What a task learns from its environment about where it runs.
@Suite("Agent: task environment")
struct TaskEnvironmentTests {
    @Test("a task's environment names its task and the node its assignment names (FLOTILLA_NODE, FLOTILLA_NODE_ID)")
    func nodeEnvironment() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-task-environment")
        let reports = TaskWorkerTests.Reports()
        try await TaskWorkerTests.withWorker { (worker: TaskWorker) async throws in
            var task = TaskWorkerTests.assignment(
                "env", command: "echo \"$FLOTILLA_TASK_ID $FLOTILLA_NODE $FLOTILLA_NODE_ID\" > \(work.path)/env")
            task.nodeID = "node-id-1"
            task.nodeName = "n1"
            await worker.apply(TaskWorkerTests.update(complete: true, generation: 1, [task]))
            #expect(try await TaskWorkerTests.eventuallyReported(reports, worker, task: "env") { $0.state == .complete })
            #expect(try String(contentsOfFile: work.path + "/env", encoding: .utf8) == "env n1 node-id-1\n")
        }
    }
}

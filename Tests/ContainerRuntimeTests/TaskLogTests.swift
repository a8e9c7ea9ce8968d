@testable import ContainerRuntime
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Log capture and reading: tasks (real host processes, through the process driver) write to their FIFOs,
/// collectors append records to rotating files, cursors read them back with tail, since and follow.
@Suite("Container runtime: task logs", .serialized)
struct TaskLogTests {
    static let logger = Logger(label: "test.logs")

    static func configuration(_ directory: TemporaryDirectory) -> TaskLogConfiguration {
        TaskLogConfiguration(directory: directory.path + "/logs")
    }

    /// Runs `command` as a task writing to `output`; its pid and a box its exit status lands in.
    static func run(_ command: String, output: TaskOutput, taskID: String = "t1") throws -> (pid: Int32, exit: ExitBox) {
        let exit = ExitBox()
        let pid = try ProcessDriver().start(
            taskID: taskID, command: command, args: [], environment: [:], port: nil, output: output) { exit.set($0) }
        return (pid, exit)
    }

    final class ExitBox: Sendable {
        private let value = Mutex<Int32?>(nil)
        func set(_ status: Int32) { value.withLock { $0 = status } }
        var status: Int32? { value.withLock { $0 } }
    }

    /// Every record of the task that is there now.
    static func records(_ logs: TaskLogs, _ taskID: String = "t1", query: TaskLogQuery = TaskLogQuery()) throws -> [TaskLogRecord] {
        guard let cursor = try logs.cursor(taskID, query: query) else { return [] }
        var all: [TaskLogRecord] = []
        while let batch = cursor.next(), !batch.isEmpty { all += batch }
        return all
    }

    static func texts(_ records: [TaskLogRecord]) -> [String] {
        records.map { String(decoding: $0.text, as: UTF8.self) }
    }

    @Test("stdout and stderr lines are captured in order, stamped with the time they were read")
    func capture() async throws {
        let directory = try TemporaryDirectory()
        let logs = try TaskLogs(configuration: Self.configuration(directory), logger: Self.logger)
        let before = TaskLogTime.now()
        let output = try await logs.capture("t1")
        let task = try Self.run("echo one; echo two >&2; printf 'three\\n'", output: output)
        #expect(try await eventually { task.exit.status != nil })
        #expect(try await eventually { try Self.records(logs).count == 3 })
        let records = try Self.records(logs)
        let after = TaskLogTime.now()
        #expect(task.exit.status == 0)
        #expect(Self.texts(records.filter { $0.stream == .stdout }) == ["one", "three"])
        #expect(Self.texts(records.filter { $0.stream == .stderr }) == ["two"])
        #expect(records.allSatisfy { $0.unixNanos >= before && $0.unixNanos <= after && !$0.partial })
        // On disk: the CRI format.
        let text = try String(contentsOfFile: logs.directory(of: "t1") + "/task.log", encoding: .utf8)
        let first = try #require(text.split(separator: "\n").first)
        #expect(first.hasSuffix(" stdout F one"))
        #expect(TaskLogTime.parse(String(first.prefix(30))) == records[0].unixNanos)
        await logs.release("t1")
        #expect(!FileManager.default.fileExists(atPath: output.stdout), "the FIFOs go when the task is released")
        #expect(try Self.records(logs).count == 3, "the logs stay")
    }

    @Test("lines longer than the limit are split into partial pieces")
    func longLines() async throws {
        let directory = try TemporaryDirectory()
        var configuration = Self.configuration(directory)
        configuration.maxLineBytes = 100
        let logs = try TaskLogs(configuration: configuration, logger: Self.logger)
        let output = try await logs.capture("t1")
        let task = try Self.run("head -c 250 /dev/zero | tr '\\0' x; echo; echo short", output: output)
        #expect(try await eventually { task.exit.status != nil })
        #expect(try await eventually { try Self.records(logs).count == 4 })
        let records = try Self.records(logs)
        #expect(records.map(\.partial) == [true, true, false, false])
        #expect(records.map(\.text.count) == [100, 100, 50, 5])
        await logs.shutdown()
    }

    @Test("the log file is rotated at its cap and N rotated files are kept")
    func rotation() async throws {
        let directory = try TemporaryDirectory()
        var configuration = Self.configuration(directory)
        configuration.maxFileBytes = 2_000
        configuration.rotatedFiles = 2
        let logs = try TaskLogs(configuration: configuration, logger: Self.logger)
        let output = try await logs.capture("t1")
        // 300 records of 51 bytes each: 15,300 bytes through files of at most 2,000.
        let task = try Self.run("i=1; while [ $i -le 300 ]; do printf 'line %05d\\n' $i; i=$((i+1)); done", output: output)
        #expect(try await eventually { task.exit.status != nil })
        #expect(try await eventually { try Self.records(logs).last.map { Self.texts([$0]) } == ["line 00300"] })
        let base = logs.directory(of: "t1") + "/task.log"
        let sizes = try [base, base + ".1", base + ".2"].map { try #require(FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int) }
        #expect(sizes.allSatisfy { $0 <= 2_000 && $0 > 0 }, "sizes \(sizes)")
        #expect(sizes[1] > 2_000 - 51 && sizes[2] > 2_000 - 51, "rotated files are full: \(sizes)")
        #expect(!FileManager.default.fileExists(atPath: base + ".3"))
        // What is kept reads back in order without gaps, ending with the last line.
        let numbers = Self.texts(try Self.records(logs)).compactMap { Int($0.dropFirst(5)) }
        #expect(numbers == Array((300 - numbers.count + 1)...300))
        #expect(numbers.count == sizes.reduce(0, +) / 51)
        await logs.shutdown()
    }

    @Test("a task writing while no collector reads (an agent restart) loses nothing the pipe holds and is not killed")
    func agentRestart() async throws {
        let directory = try TemporaryDirectory()
        let configuration = Self.configuration(directory)
        let first = try TaskLogs(configuration: configuration, logger: Self.logger)
        let output = try await first.capture("t1")
        let task = try Self.run(
            "i=1; while [ $i -le 60 ]; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.02; done; sleep 0.5", output: output)
        defer { if task.exit.status == nil { kill(-task.pid, SIGKILL) } }
        #expect(try await eventually { try Self.records(first).count >= 10 })
        // The agent goes away: nobody reads; the task keeps writing into the pipe buffers.
        await first.shutdown()
        let frozen = try Self.records(first).count
        try await Task.sleep(for: .milliseconds(600))
        #expect(try Self.records(first).count == frozen, "nothing is read while the agent is down")
        #expect(kill(task.pid, 0) == 0, "the task still runs")
        // A new agent process captures the same FIFOs again.
        let logs = try TaskLogs(configuration: configuration, logger: Self.logger)
        _ = try await logs.capture("t1")
        #expect(try await eventually(timeout: .seconds(15)) { task.exit.status != nil })
        #expect(task.exit.status == 0, "ended normally, not by SIGPIPE")
        #expect(try await eventually { try Self.records(logs).count == 120 })
        let records = try Self.records(logs)
        #expect(Self.texts(records.filter { $0.stream == .stdout }) == (1...60).map { "line \($0)" })
        #expect(Self.texts(records.filter { $0.stream == .stderr }) == (1...60).map { "err \($0)" })
        await logs.shutdown()
    }

    @Test("a write that fails (disk full) drops the line, counts it, and capture goes on")
    func diskFull() async throws {
        let directory = try TemporaryDirectory()
        let logs = try TaskLogs(configuration: Self.configuration(directory), logger: Self.logger)
        try FileManager.default.createDirectory(atPath: logs.directory(of: "t1"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: logs.directory(of: "t1") + "/task.log", withDestinationPath: "/dev/full")
        let output = try await logs.capture("t1")
        let task = try Self.run("echo a; echo b; echo c", output: output)
        #expect(try await eventually { task.exit.status != nil })
        #expect(try await eventually { logs.droppedRecords("t1") == 3 })
        #expect(task.exit.status == 0)
        #expect(logs.isCapturing("t1"))
        await logs.shutdown()
    }

    @Test("released tasks' logs are kept up to the limit, oldest removed first; a sweep releases what a crash left")
    func retention() async throws {
        let directory = try TemporaryDirectory()
        var configuration = Self.configuration(directory)
        configuration.retainedFinishedTasks = 2
        let logs = try TaskLogs(configuration: configuration, logger: Self.logger)
        for id in ["a", "b", "c"] {
            _ = try await logs.capture(id)
            try await Task.sleep(for: .milliseconds(20))
            await logs.release(id)
        }
        let kept = try FileManager.default.contentsOfDirectory(atPath: configuration.directory).sorted()
        #expect(kept == ["b", "c"])
        _ = try await logs.capture("d")
        _ = try await logs.capture("e")
        await logs.shutdown()
        let restarted = try TaskLogs(configuration: configuration, logger: Self.logger)
        await restarted.sweep(keeping: ["e"])
        #expect(!FileManager.default.fileExists(atPath: restarted.directory(of: "d") + "/stdout.pipe"))
        #expect(FileManager.default.fileExists(atPath: restarted.directory(of: "e") + "/stdout.pipe"))
    }

    // MARK: - Reading

    /// Writes records with the given times ("second.text") through a rotating file of `maxBytes`.
    static func write(_ file: RotatingLogFile, _ lines: [(UInt64, String)], stream: TaskLogStream = .stdout) {
        for (second, text) in lines {
            file.append(TaskLogRecord(unixNanos: second * 1_000_000_000, stream: stream, text))
        }
    }

    @Test("tail and since read across rotated files, in order")
    func tailAndSince() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/task.log"
        // Each record: 30 + 1 + 6 + 3 + 6 + 1 = 47 bytes; 4 per file.
        let file = RotatingLogFile(path: path, maxBytes: 200, rotatedFiles: 3, logger: Self.logger)
        Self.write(file, (1...12).map { (UInt64(1_000 + $0), "line\(String(format: "%02d", $0))") })
        file.close()
        #expect(FileManager.default.fileExists(atPath: path + ".2"))
        func read(_ query: TaskLogQuery) throws -> [String] {
            let cursor = try TaskLogCursor(path: path, rotatedFiles: 3, query: query)
            var all: [TaskLogRecord] = []
            while let batch = cursor.next(maxRecords: 5) { all += batch }
            return Self.texts(all)
        }
        #expect(try read(TaskLogQuery()) == (1...12).map { "line\(String(format: "%02d", $0))" })
        #expect(try read(TaskLogQuery(tail: 3)) == ["line10", "line11", "line12"])
        #expect(try read(TaskLogQuery(tail: 6)) == (7...12).map { "line\(String(format: "%02d", $0))" })
        #expect(try read(TaskLogQuery(tail: 100)).count == 12)
        #expect(try read(TaskLogQuery(tail: 0)) == [])
        #expect(try read(TaskLogQuery(sinceUnixNanos: 1_010 * 1_000_000_000)) == ["line10", "line11", "line12"])
        #expect(try read(TaskLogQuery(tail: 5, sinceUnixNanos: 1_010 * 1_000_000_000)) == ["line10", "line11", "line12"])
        #expect(try read(TaskLogQuery(tail: 2, sinceUnixNanos: 1_003 * 1_000_000_000)) == ["line11", "line12"])
    }

    @Test("follow returns what is appended next, across a rotation")
    func follow() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/task.log"
        let file = RotatingLogFile(path: path, maxBytes: 200, rotatedFiles: 1, logger: Self.logger)
        Self.write(file, [(1, "old1"), (2, "old2")])
        let cursor = try TaskLogCursor(path: path, rotatedFiles: 1, query: TaskLogQuery(tail: 1, follow: true))
        #expect(Self.texts(try #require(cursor.next())) == ["old2"])
        #expect(cursor.next() == [], "nothing new yet")
        // Records are 45 bytes: four fit in 200, the fifth rotates task.log to task.log.1.
        Self.write(file, [(3, "new3"), (4, "new4"), (5, "new5")])
        #expect(FileManager.default.fileExists(atPath: path + ".1"))
        var seen: [String] = []
        while let batch = cursor.next(), !batch.isEmpty { seen += Self.texts(batch) }
        #expect(seen == ["new3", "new4", "new5"])
        Self.write(file, [(6, "new6")])
        while let batch = cursor.next(), !batch.isEmpty { seen += Self.texts(batch) }
        #expect(seen.last == "new6")
        file.close()
    }

    @Test("follow on a task that has not written yet waits for its first line")
    func followEmpty() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/task.log"
        let cursor = try TaskLogCursor(path: path, rotatedFiles: 3, query: TaskLogQuery(tail: 10, follow: true))
        #expect(cursor.next() == [])
        let file = RotatingLogFile(path: path, maxBytes: 10_000, rotatedFiles: 3, logger: Self.logger)
        Self.write(file, [(1, "first")], stream: .stderr)
        let batch = try #require(cursor.next())
        #expect(Self.texts(batch) == ["first"] && batch.first?.stream == .stderr)
        file.close()
    }

    @Test("RFC 3339 times: formatted with nine fraction digits, parsed with offsets and any precision")
    func times() {
        #expect(TaskLogTime.format(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z")
        #expect(TaskLogTime.parse("2023-11-14T22:13:20.123456789Z") == 1_700_000_000_123_456_789)
        #expect(TaskLogTime.parse("2023-11-14T22:13:20Z") == 1_700_000_000_000_000_000)
        #expect(TaskLogTime.parse("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000)
        #expect(TaskLogTime.parse("2023-11-14 22:13:20") == nil)
        #expect(TaskLogTime.parse("yesterday") == nil)
        let record = TaskLogRecord(unixNanos: 42, stream: .stderr, partial: true, "a b c")
        #expect(TaskLogRecord(line: record.encoded.dropLast()) == record)
    }
}

import ClusterModel
#if canImport(Glibc)
import Glibc
#endif

/// Which of a task's output streams a line came from.
public enum TaskLogStream: String, Sendable, CaseIterable {
    case stdout, stderr
}

/// One line of a task's output as the agent keeps it in the task's log files.
///
/// On disk a record is one line in the CRI logging format (what Kubernetes' runtimes write):
/// `2026-01-02T10:00:00.123456789Z stdout F the text` — the time the agent read it (RFC 3339, UTC, always nine
/// fraction digits, so the text sorts as the time does), the stream, `F` for a full line or `P` for a piece of
/// a line longer than the limit (the rest follows in the next records), and the text without its newline.
public struct TaskLogRecord: Sendable, Equatable {
    /// When the agent read the line: nanoseconds since the Unix epoch.
    public var unixNanos: UInt64
    public var stream: TaskLogStream
    /// A piece of an over-long line (`P`); the next record of the stream continues it.
    public var partial: Bool
    /// The line's bytes without the newline (not necessarily UTF-8; invalid bytes become U+FFFD when shown).
    public var text: [UInt8]

    public init(unixNanos: UInt64, stream: TaskLogStream, partial: Bool = false, text: [UInt8]) {
        self.unixNanos = unixNanos
        self.stream = stream
        self.partial = partial
        self.text = text
    }

    public init(unixNanos: UInt64, stream: TaskLogStream, partial: Bool = false, _ text: String) {
        self.init(unixNanos: unixNanos, stream: stream, partial: partial, text: Array(text.utf8))
    }

    /// The record as one line of a log file, newline included.
    public var encoded: [UInt8] {
        var line = Array(TaskLogTime.format(unixNanos).utf8)
        line.reserveCapacity(line.count + 10 + text.count)
        line.append(UInt8(ascii: " "))
        line += stream.rawValue.utf8
        line += partial ? Array(" P ".utf8) : Array(" F ".utf8)
        line += text
        line.append(UInt8(ascii: "\n"))
        return line
    }

    /// Parses one line of a log file (without its newline); nil when it is not a record.
    public init?(line: some Collection<UInt8>) {
        let bytes = Array(line)
        // timestamp (30) + " " + stream + " " + flag + " "
        guard bytes.count >= TaskLogTime.width + 10, let unixNanos = TaskLogTime.parse(bytes[0..<TaskLogTime.width]),
              bytes[TaskLogTime.width] == UInt8(ascii: " ") else { return nil }
        var rest = bytes[(TaskLogTime.width + 1)...]
        guard let space = rest.firstIndex(of: UInt8(ascii: " ")),
              let stream = TaskLogStream(rawValue: String(decoding: rest[..<space], as: UTF8.self)) else { return nil }
        rest = rest[(space + 1)...]
        guard rest.count >= 2, let flag = rest.first, flag == UInt8(ascii: "F") || flag == UInt8(ascii: "P"),
              rest[rest.startIndex + 1] == UInt8(ascii: " ") else { return nil }
        self.init(unixNanos: unixNanos, stream: stream, partial: flag == UInt8(ascii: "P"), text: Array(rest[(rest.startIndex + 2)...]))
    }
}

/// The times of log records: RFC 3339 in UTC with nanoseconds (`ClusterModel.RFC3339`).
public enum TaskLogTime {
    /// Characters of a formatted time: `2026-01-02T10:00:00.123456789Z`.
    static let width = RFC3339.width

    /// The wall clock now, in nanoseconds since the Unix epoch.
    public static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    public static func format(_ unixNanos: UInt64) -> String { RFC3339.format(unixNanos: unixNanos) }
    public static func parse(_ text: String) -> UInt64? { RFC3339.parse(text) }
    static func parse(_ bytes: ArraySlice<UInt8>) -> UInt64? { RFC3339.parse(Array(bytes)) }
}

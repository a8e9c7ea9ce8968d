import Foundation
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

/// RFC 3339 timestamps with nanoseconds in UTC, as log records carry them.
public enum TaskLogTime {
    /// Characters of a formatted time: `2026-01-02T10:00:00.123456789Z`.
    static let width = 30

    /// The wall clock now, in nanoseconds since the Unix epoch.
    public static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// `2026-01-02T10:00:00.123456789Z`.
    public static func format(_ unixNanos: UInt64) -> String {
        var seconds = time_t(unixNanos / 1_000_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int, _ count: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, count - text.count)) + text
        }
        return digits(Int(parts.tm_year) + 1900, 4) + "-" + digits(Int(parts.tm_mon) + 1, 2) + "-" + digits(Int(parts.tm_mday), 2)
            + "T" + digits(Int(parts.tm_hour), 2) + ":" + digits(Int(parts.tm_min), 2) + ":" + digits(Int(parts.tm_sec), 2)
            + "." + digits(Int(unixNanos % 1_000_000_000), 9) + "Z"
    }

    /// Parses RFC 3339 (`Z` or a `±HH:MM` offset, any number of fraction digits); nil when it is not one.
    public static func parse(_ text: String) -> UInt64? { parse(Array(text.utf8)[...]) }

    static func parse(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        let b = Array(bytes)
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= b.count else { return nil }
            var value = 0
            for byte in b[from..<(from + count)] {
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int(byte - 48)
            }
            return value
        }
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var index = 19
        var nanos = 0
        if index < b.count, b[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 100_000_000
            let start = index
            while index < b.count, b[index] >= 48, b[index] <= 57 {
                nanos += Int(b[index] - 48) * scale
                scale /= 10
                index += 1
            }
            guard index > start else { return nil }
        }
        var offset = 0
        guard index < b.count else { return nil }
        switch b[index] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            index += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard b.count >= index + 6, b[index + 3] == UInt8(ascii: ":"), let h = number(index + 1, 2), let m = number(index + 4, 2) else { return nil }
            offset = (h * 3600 + m * 60) * (b[index] == UInt8(ascii: "+") ? 1 : -1)
            index += 6
        default:
            return nil
        }
        guard index == b.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = Int(timegm(&parts)) - offset
        guard seconds >= 0 else { return nil }
        return UInt64(seconds) * 1_000_000_000 + UInt64(nanos)
    }
}

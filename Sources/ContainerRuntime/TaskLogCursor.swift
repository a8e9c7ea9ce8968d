#if canImport(Glibc)
import Glibc
#endif

/// Which of a task's log records to read.
public struct TaskLogQuery: Sendable, Equatable {
    /// Only the last this many records (after `sinceUnixNanos`); nil: all.
    public var tail: Int?
    /// Only records read at or after this time (nanoseconds since the Unix epoch); nil: all.
    public var sinceUnixNanos: UInt64?
    /// Keep reading what the task writes next.
    public var follow: Bool

    public init(tail: Int? = nil, sinceUnixNanos: UInt64? = nil, follow: Bool = false) {
        self.tail = tail
        self.sinceUnixNanos = sinceUnixNanos
        self.follow = follow
    }
}

/// Reads a task's records in order across its rotated files (`task.log.N` … `task.log.1`, `task.log`).
///
/// The files that exist when the cursor is made are opened at once, so a rotation while it reads loses
/// nothing it had. Following, it reads `task.log` as it grows; when `task.log` is a new file (another inode:
/// it was rotated) it finishes the old one first, and when the file shrank (it started over) it reads from
/// the start. The caller polls `next` (every 250 ms is what the agent does). One cursor per reader; not
/// thread-safe.
public final class TaskLogCursor {
    private struct File {
        let descriptor: Int32
        let inode: UInt64
    }

    private let path: String
    private let query: TaskLogQuery
    private var files: [File] = []
    /// The file being read and the offset in it.
    private var current = 0
    private var offset = 0
    /// Bytes of a line whose newline has not been read yet.
    private var carry: [UInt8] = []
    /// Records read but not returned yet.
    private var ready: [TaskLogRecord] = []
    private var readyStart = 0
    private var closed = false
    private static let chunk = 64 << 10

    init(path: String, rotatedFiles: Int, query: TaskLogQuery) throws {
        self.path = path
        self.query = query
        for index in stride(from: max(rotatedFiles, 0), through: 1, by: -1) {
            if let file = Self.open("\(path).\(index)") { files.append(file) }
        }
        if let file = Self.open(path) { files.append(file) }
        if let tail = query.tail { seekToTail(tail) }
    }

    deinit { close() }

    /// Closes the files; `next` returns nil afterwards.
    public func close() {
        closed = true
        for file in files { Glibc.close(file.descriptor) }
        files = []
        ready = []
        readyStart = 0
    }

    /// The next records, at most `maxRecords` and about `maxBytes` of text (at least one record). Following:
    /// an empty array when nothing new is there yet. Not following: nil once everything was returned.
    public func next(maxRecords: Int = 256, maxBytes: Int = 256 << 10) -> [TaskLogRecord]? {
        guard !closed else { return nil }
        while ready.count - readyStart < maxRecords {
            guard readMore() else { break }
        }
        let available = ready.count - readyStart
        guard available > 0 else { return query.follow ? [] : nil }
        var end = readyStart
        var bytes = 0
        while end < ready.count, end - readyStart < maxRecords, end == readyStart || bytes + ready[end].text.count <= maxBytes {
            bytes += ready[end].text.count
            end += 1
        }
        let batch = Array(ready[readyStart..<end])
        readyStart = end
        if readyStart == ready.count {
            ready.removeAll(keepingCapacity: true)
            readyStart = 0
        }
        return batch
    }

    // MARK: - Reading

    /// Reads one chunk (moving to the next file, or following `task.log` to a new one); false when there is
    /// nothing more now.
    private func readMore() -> Bool {
        while true {
            if current >= files.count {
                // Nothing existed yet (a task that has not written): look again when following.
                guard query.follow, files.isEmpty, let file = Self.open(path) else { return false }
                files.append(file)
                current = 0
                offset = 0
            }
            var buffer = [UInt8](repeating: 0, count: Self.chunk)
            let count = buffer.withUnsafeMutableBytes { pread(files[current].descriptor, $0.baseAddress, Self.chunk, off_t(offset)) }
            if count > 0 {
                offset += count
                take(buffer[..<count])
                return true
            }
            if current < files.count - 1 {
                carry = []  // writers end files with whole lines; a torn last line is dropped
                current += 1
                offset = 0
                continue
            }
            guard query.follow else { return false }
            // At the end of task.log: was it rotated, or did it start over?
            var info = stat()
            guard stat(path, &info) == 0 else { return false }
            if UInt64(info.st_ino) != files[current].inode {
                guard let file = Self.open(path) else { return false }
                files.append(file)
                carry = []
                current += 1
                offset = 0
                continue
            }
            if Int(info.st_size) < offset {
                offset = 0
                carry = []
                continue
            }
            return false
        }
    }

    /// Splits bytes into records and keeps those the query wants.
    private func take(_ bytes: ArraySlice<UInt8>) {
        var start = bytes.startIndex
        while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let record: TaskLogRecord?
            if carry.isEmpty {
                record = TaskLogRecord(line: bytes[start..<newline])
            } else {
                carry += bytes[start..<newline]
                record = TaskLogRecord(line: carry)
                carry = []
            }
            if let record, wanted(record) { ready.append(record) }
            start = newline + 1
        }
        carry += bytes[start...]
    }

    private func wanted(_ record: TaskLogRecord) -> Bool {
        guard let since = query.sinceUnixNanos else { return true }
        return record.unixNanos >= since
    }

    // MARK: - Tail

    /// Moves the start to the `count`-th last wanted record, searching the files newest first (one file in
    /// memory at a time).
    private func seekToTail(_ count: Int) {
        guard let last = files.indices.last else { return }
        if count <= 0 {
            current = last
            var info = stat()
            offset = fstat(files[last].descriptor, &info) == 0 ? Int(info.st_size) : 0
            return
        }
        var found = 0
        for index in files.indices.reversed() {
            let content = Self.readAll(files[index].descriptor)
            var end = content.count
            // Skip a torn last line (no newline yet).
            if let lastNewline = content.lastIndex(of: UInt8(ascii: "\n")) { end = lastNewline } else { continue }
            while end > 0 {
                let start = content[..<end].lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
                if let record = TaskLogRecord(line: content[start..<end]), wanted(record) {
                    found += 1
                    if found == count {
                        current = index
                        offset = start
                        return
                    }
                }
                end = start == 0 ? 0 : start - 1
            }
        }
        current = 0
        offset = 0
    }

    private static func open(_ path: String) -> File? {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            Glibc.close(descriptor)
            return nil
        }
        return File(descriptor: descriptor, inode: UInt64(info.st_ino))
    }

    private static func readAll(_ descriptor: Int32) -> [UInt8] {
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_size > 0 else { return [] }
        var content = [UInt8](repeating: 0, count: Int(info.st_size))
        var filled = 0
        while filled < content.count {
            let count = content.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + filled, $0.count - filled, off_t(filled)) }
            guard count > 0 else { break }
            filled += count
        }
        return Array(content[..<filled])
    }
}

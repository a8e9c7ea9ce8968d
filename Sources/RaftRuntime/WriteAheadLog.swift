#if canImport(Glibc)
import Glibc
#endif
import CoreMetrics
public import Logging
import Messages
public import Raft
import SwiftProtobuf

/// Raft's durable log: append-only segment files of checksummed records (entries, hard states, snapshot
/// markers), fsynced before anything is acknowledged.
///
/// Recovery reads every segment in order. A later entry at an index already seen replaces that entry and
/// everything after it (how a truncated suffix is persisted without rewriting files). A bad record at the end
/// of the last segment with nothing valid after it is a torn write from a crash and is cut off; a bad record
/// anywhere else refuses to start, naming the file and offset.
public final class WriteAheadLog {
    /// What the log held when it was opened.
    public struct Recovered: Sendable, Equatable {
        public var hardState: HardState
        public var snapshot: SnapshotMetadata?
        public var entries: [LogEntry]
        /// Bytes cut from a torn tail (0 normally).
        public var tornBytes: Int
    }

    private struct Segment {
        let sequence: UInt64
        let path: String
        /// Highest entry index written into it (0 if none).
        var lastEntryIndex: UInt64
    }

    public let directory: String
    public let segmentSize: Int
    private let logger: Logger
    private var segments: [Segment]
    private var fd: Int32
    private var currentSize: Int
    private var hardState: HardState
    private var snapshot: SnapshotMetadata?
    /// Records each fsync's latency (set by the driver; none by default).
    var fsyncTimer: CoreMetrics.Timer?

    public static let defaultSegmentSize = 64 << 20

    private init(directory: String, segmentSize: Int, logger: Logger, segments: [Segment], fd: Int32, size: Int,
                 hardState: HardState, snapshot: SnapshotMetadata?) {
        self.directory = directory
        self.segmentSize = segmentSize
        self.logger = logger
        self.segments = segments
        self.fd = fd
        self.currentSize = size
        self.hardState = hardState
        self.snapshot = snapshot
    }

    deinit { close(fd) }

    static func segmentName(_ sequence: UInt64) -> String {
        let hex = String(sequence, radix: 16)
        return "wal-" + String(repeating: "0", count: 16 - hex.count) + hex + ".log"
    }

    /// Opens (or creates) the log in `directory` and recovers what it holds.
    public static func open(
        directory: String, segmentSize: Int = defaultSegmentSize, logger: Logger = Logger(label: "flotilla.wal")
    ) throws -> (WriteAheadLog, Recovered) {
        try DurableFile.createDirectory(directory)
        let names = try DurableFile.list(directory).filter { $0.hasPrefix("wal-") && $0.hasSuffix(".log") }
        var segments: [Segment] = []
        var recovered = Recovered(hardState: HardState(), snapshot: nil, entries: [], tornBytes: 0)

        for (position, name) in names.enumerated() {
            guard let sequence = UInt64(name.dropFirst(4).dropLast(4), radix: 16) else {
                throw StorageError(.corrupt, "\(directory)/\(name) is not a write-ahead-log segment name; remove stray files from \(directory)")
            }
            let path = directory + "/" + name
            let bytes = try DurableFile.readAll(path)
            let isLast = position == names.count - 1
            var offset = 0
            var lastEntryIndex: UInt64 = 0
            scan: while true {
                switch RecordFormat.parse(bytes, at: offset) {
                case .end:
                    break scan
                case .invalid(let reason):
                    if isLast && !RecordFormat.validRecordFollows(bytes, after: offset) {
                        recovered.tornBytes = bytes.count - offset
                        logger.warning(
                            "cutting a torn write at the end of the log",
                            metadata: ["file": "\(path)", "offset": "\(offset)", "bytes": "\(bytes.count - offset)"])
                        try DurableFile.truncate(path, to: offset)
                        break scan
                    }
                    throw StorageError(
                        .corrupt,
                        "write-ahead log \(path) is corrupt at offset \(offset) (\(reason)); restore this controller from a snapshot or remove it from the cluster and re-join it")
                case .record(let type, let payload, let next):
                    do {
                        try apply(type, payload, to: &recovered, lastEntryIndex: &lastEntryIndex)
                    } catch {
                        throw StorageError(.corrupt, "write-ahead log \(path) at offset \(offset): \(error)")
                    }
                    offset = next
                }
            }
            segments.append(Segment(sequence: sequence, path: path, lastEntryIndex: lastEntryIndex))
        }

        let sequence = (segments.last?.sequence ?? 0) + (segments.isEmpty ? 1 : 0)
        let path = directory + "/" + segmentName(sequence)
        let fd = try DurableFile.open(path, flags: O_WRONLY | O_CREAT | O_APPEND)
        var info = stat()
        fstat(fd, &info)
        if segments.isEmpty {
            segments.append(Segment(sequence: sequence, path: path, lastEntryIndex: 0))
            try DurableFile.syncDirectory(directory)
        }
        let log = WriteAheadLog(
            directory: directory, segmentSize: segmentSize, logger: logger, segments: segments, fd: fd,
            size: Int(info.st_size), hardState: recovered.hardState, snapshot: recovered.snapshot)
        return (log, recovered)
    }

    private static func apply(
        _ type: RecordFormat.RecordType, _ payload: ArraySlice<UInt8>, to recovered: inout Recovered,
        lastEntryIndex: inout UInt64
    ) throws {
        switch type {
        case .entry:
            let entry = try RaftRecords.entry(Flotilla_V1_LogEntryRecord(serializedBytes: Array(payload)))
            if let snapshot = recovered.snapshot, entry.index <= snapshot.index { return }
            if let last = recovered.entries.last, entry.index <= last.index {
                recovered.entries.removeAll { $0.index >= entry.index }
            }
            let expected = recovered.entries.last?.index.next ?? recovered.snapshot?.index.next
            if let expected, entry.index != expected {
                throw StorageError(.corrupt, "entry \(entry.index) follows \(expected.previous): the log has a gap")
            }
            recovered.entries.append(entry)
            lastEntryIndex = max(lastEntryIndex, entry.index.rawValue)
        case .hardState:
            recovered.hardState = RaftRecords.hardState(try Flotilla_V1_HardStateRecord(serializedBytes: Array(payload)))
        case .snapshot:
            let metadata = RaftRecords.metadata(try Flotilla_V1_SnapshotMetadataRecord(serializedBytes: Array(payload)))
            if (recovered.snapshot?.index ?? 0) <= metadata.index {
                recovered.snapshot = metadata
                recovered.entries.removeAll { $0.index <= metadata.index }
            }
        }
    }

    // MARK: - Writing

    /// Appends entries (replacing any durable entries at or after the first one's index) and a hard state,
    /// then fsyncs. Returns only when everything is on disk.
    public func append(entries: [LogEntry], hardState newState: HardState?) throws {
        var bytes: [UInt8] = []
        for entry in entries {
            RecordFormat.encode(.entry, try RaftRecords.record(entry).serializedBytes(), into: &bytes)
        }
        if let newState {
            RecordFormat.encode(.hardState, try RaftRecords.record(newState).serializedBytes(), into: &bytes)
        }
        guard !bytes.isEmpty else { return }
        try write(bytes)
        if let newState { hardState = newState }
        if let last = entries.last {
            segments[segments.count - 1].lastEntryIndex = max(segments[segments.count - 1].lastEntryIndex, last.index.rawValue)
        }
        if currentSize >= segmentSize { try startSegment() }
    }

    /// Records that a snapshot now covers everything up to `metadata.index`, and deletes segments that hold
    /// nothing newer.
    public func snapshotSaved(_ metadata: SnapshotMetadata) throws {
        var bytes: [UInt8] = []
        RecordFormat.encode(.snapshot, try RaftRecords.record(metadata).serializedBytes(), into: &bytes)
        try write(bytes)
        snapshot = metadata
        // Every segment but the current one whose entries are all covered can go.
        var removable = 0
        while removable < segments.count - 1, segments[removable].lastEntryIndex <= metadata.index.rawValue {
            removable += 1
        }
        guard removable > 0 else { return }
        for segment in segments[..<removable] { try DurableFile.remove(segment.path) }
        segments.removeFirst(removable)
        try DurableFile.syncDirectory(directory)
    }

    private func write(_ bytes: [UInt8]) throws {
        let path = segments[segments.count - 1].path
        try DurableFile.writeAll(fd, bytes, path: path)
        if let fsyncTimer {
            try fsyncTimer.time { try DurableFile.syncData(fd, path: path) }
        } else {
            try DurableFile.syncData(fd, path: path)
        }
        currentSize += bytes.count
    }

    /// A new segment starts with the current hard state and snapshot marker, so older segments can be
    /// deleted without losing either.
    private func startSegment() throws {
        let sequence = segments[segments.count - 1].sequence + 1
        let path = directory + "/" + Self.segmentName(sequence)
        let newFD = try DurableFile.open(path, flags: O_WRONLY | O_CREAT | O_APPEND | O_TRUNC)
        close(fd)
        fd = newFD
        currentSize = 0
        segments.append(Segment(sequence: sequence, path: path, lastEntryIndex: 0))
        try DurableFile.syncDirectory(directory)
        var bytes: [UInt8] = []
        RecordFormat.encode(.hardState, try RaftRecords.record(hardState).serializedBytes(), into: &bytes)
        if let snapshot {
            RecordFormat.encode(.snapshot, try RaftRecords.record(snapshot).serializedBytes(), into: &bytes)
        }
        try write(bytes)
    }

    /// Segment files currently on disk (tests and diagnostics).
    public var segmentPaths: [String] { segments.map(\.path) }
}

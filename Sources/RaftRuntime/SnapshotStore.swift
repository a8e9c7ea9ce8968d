import CZlib
import Messages
public import Raft
import SwiftProtobuf

/// Snapshot files in a directory: `snap-<index>-<term>.snap`, written atomically (temp file, fsync, rename,
/// fsync directory), zlib-compressed, checksummed. The newest two are kept.
///
/// Layout: `"FLSNAP01" | metadata length u32 | SnapshotMetadataRecord | data length u64 (uncompressed) |
/// compressed length u64 | zlib data | crc32 u32` (big endian; the CRC covers everything before it).
public struct SnapshotStore: Sendable {
    public let directory: String
    static let magic = Array("FLSNAP01".utf8)
    public static let kept = 2

    public init(directory: String) throws {
        self.directory = directory
        try DurableFile.createDirectory(directory)
    }

    static func fileName(_ metadata: SnapshotMetadata) -> String {
        func hex(_ value: UInt64) -> String {
            let text = String(value, radix: 16)
            return String(repeating: "0", count: 16 - text.count) + text
        }
        return "snap-\(hex(metadata.index.rawValue))-\(hex(metadata.term.rawValue)).snap"
    }

    /// Writes `snapshot` durably, then removes all but the newest `kept` snapshot files.
    public func save(_ snapshot: Snapshot) throws {
        let path = directory + "/" + Self.fileName(snapshot.metadata)
        try DurableFile.writeAtomically(try Self.encode(snapshot), to: path, directory: directory)
        let files = try snapshotFiles()
        for old in files.dropLast(Self.kept) { try DurableFile.remove(directory + "/" + old) }
    }

    /// The file format as bytes (also used for backup files).
    public static func encode(_ snapshot: Snapshot) throws -> [UInt8] {
        var bytes = magic
        let metadata: [UInt8] = try RaftRecords.record(snapshot.metadata).serializedBytes()
        append(UInt32(metadata.count), to: &bytes)
        bytes.append(contentsOf: metadata)
        let compressed = try compress(snapshot.data)
        append(UInt64(snapshot.data.count), to: &bytes)
        append(UInt64(compressed.count), to: &bytes)
        bytes.append(contentsOf: compressed)
        append(RecordFormat.crc(bytes[...]), to: &bytes)
        return bytes
    }

    /// The newest snapshot, or nil if there is none. A damaged newest snapshot is an error naming the file:
    /// the log before it may already be gone, so falling back silently could lose data.
    public func loadLatest() throws -> Snapshot? {
        guard let name = try snapshotFiles().last else { return nil }
        return try load(directory + "/" + name)
    }

    func snapshotFiles() throws -> [String] {
        try DurableFile.list(directory).filter { $0.hasPrefix("snap-") && $0.hasSuffix(".snap") }.sorted()
    }

    public func load(_ path: String) throws -> Snapshot {
        try Self.decode(try DurableFile.readAll(path), path: path)
    }

    /// Parses the file format; errors name `path`.
    public static func decode(_ bytes: [UInt8], path: String) throws -> Snapshot {
        func corrupt(_ why: String) -> StorageError {
            StorageError(.corrupt, "snapshot \(path) is damaged (\(why)); restore it from a backup (flotilla snapshot save) or re-join this controller")
        }
        guard bytes.count >= magic.count + 4 + 16 + 4, Array(bytes.prefix(8)) == magic else { throw corrupt("bad header") }
        let stored = read32(bytes, bytes.count - 4)
        guard RecordFormat.crc(bytes[..<(bytes.count - 4)]) == stored else { throw corrupt("checksum mismatch") }
        var offset = 8
        let metadataLength = Int(read32(bytes, offset)); offset += 4
        guard offset + metadataLength + 16 <= bytes.count - 4 else { throw corrupt("truncated metadata") }
        let metadata = RaftRecords.metadata(try Flotilla_V1_SnapshotMetadataRecord(serializedBytes: Array(bytes[offset..<(offset + metadataLength)])))
        offset += metadataLength
        let dataLength = Int(read64(bytes, offset)); offset += 8
        let compressedLength = Int(read64(bytes, offset)); offset += 8
        guard offset + compressedLength == bytes.count - 4 else { throw corrupt("length mismatch") }
        let data = try decompress(Array(bytes[offset..<(offset + compressedLength)]), size: dataLength)
        return Snapshot(metadata: metadata, data: data)
    }

    // MARK: - zlib

    static func compress(_ data: [UInt8]) throws -> [UInt8] {
        var capacity = compressBound(uLong(data.count))
        var output = [UInt8](repeating: 0, count: Int(capacity))
        let status = output.withUnsafeMutableBufferPointer { out in
            data.withUnsafeBufferPointer { input in
                compress2(out.baseAddress, &capacity, input.baseAddress, uLong(input.count), Z_DEFAULT_COMPRESSION)
            }
        }
        guard status == Z_OK else { throw StorageError(.io, "zlib could not compress a snapshot (status \(status))") }
        return Array(output[..<Int(capacity)])
    }

    static func decompress(_ data: [UInt8], size: Int) throws -> [UInt8] {
        var length = uLong(size)
        var output = [UInt8](repeating: 0, count: max(size, 1))
        let status = output.withUnsafeMutableBufferPointer { out in
            data.withUnsafeBufferPointer { input in
                uncompress(out.baseAddress, &length, input.baseAddress, uLong(input.count))
            }
        }
        guard status == Z_OK, Int(length) == size else {
            throw StorageError(.corrupt, "snapshot data does not inflate to its recorded size (zlib status \(status))")
        }
        return Array(output[..<size])
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: withUnsafeBytes(of: value.bigEndian, Array.init))
    }

    private static func read32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    private static func read64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        bytes[offset..<(offset + 8)].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

import CZlib
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Applies one image layer (a tar archive, gzip-compressed or not) onto a root file system directory, as the
/// OCI image spec says: entries in order, `.wh.NAME` deletes NAME, `.wh..wh..opq` empties its directory of what
/// lower layers put there. Nothing lands outside the root: paths are cleaned, `..` refused, and symbolic links
/// met on the way are resolved inside the root (an absolute target means the root's, not the host's).
public enum LayerUnpacker {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Unpacks `layer` into `root` (which must exist). Returns how many entries were applied.
    @discardableResult
    public static func unpack(layer: String, into root: String) throws -> Int {
        try withTar(layer) { try apply($0, into: root, whiteouts: true) }
    }

    /// Extracts a tar archive (an OCI archive: a tar of an image layout) into `directory` (which must exist),
    /// with the same care as a layer, but no whiteouts: every entry is what it says.
    public static func extract(archive: String, into directory: String) throws {
        _ = try withTar(archive) { try apply($0, into: directory, whiteouts: false) }
    }

    /// Opens a tar file, gzip-compressed or not (inflated to a temporary file first), for `body`.
    static func withTar<Value>(_ path: String, _ body: (TarReader) throws -> Value) throws -> Value {
        guard let input = FileHandle(forReadingAtPath: path) else { throw Failure("cannot open \(path)") }
        defer { try? input.close() }
        let magic = try input.read(upToCount: 2) ?? Data()
        try input.seek(toOffset: 0)
        if magic == Data([0x1F, 0x8B]) {
            let plain = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-layer-\(UUID().uuidString).tar").path
            defer { try? FileManager.default.removeItem(atPath: plain) }
            try gunzip(input, to: plain)
            guard let tar = FileHandle(forReadingAtPath: plain) else { throw Failure("cannot reopen the inflated \(path)") }
            defer { try? tar.close() }
            return try body(TarReader(tar))
        }
        return try body(TarReader(input))
    }

    // MARK: - Applying entries

    /// `whiteouts`: whether `.wh.` names delete what lower layers put there (layers) or are plain files.
    static func apply(_ reader: TarReader, into root: String, whiteouts: Bool) throws -> Int {
        var reader = reader
        var count = 0
        // What this layer itself put in place: an opaque marker hides only the lower layers' entries.
        var created: Set<String> = []
        while let entry = try reader.next() {
            count += 1
            let components = try cleanComponents(entry.path)
            guard let name = components.last else { continue }  // "./" itself
            let parent = try resolveInside(root: root, Array(components.dropLast()), create: true)
            if whiteouts && name == ".wh..wh..opq" {
                for child in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where !created.contains(parent + "/" + child) {
                    try removeTree(parent + "/" + child)
                }
                continue
            }
            if whiteouts && name.hasPrefix(".wh.") {
                try removeTree(parent + "/" + String(name.dropFirst(4)))
                continue
            }
            let target = parent + "/" + name
            created.insert(target)
            switch entry.kind {
            case .directory:
                var info = stat()
                if lstat(target, &info) == 0 && (info.st_mode & S_IFMT) != S_IFDIR { try removeTree(target) }
                if lstat(target, &info) != 0 {
                    guard mkdir(target, 0o755) == 0 else { throw Failure("cannot create directory \(entry.path): \(errnoText())") }
                }
                chmod(target, mode_t(entry.mode & 0o7777))
            case .file:
                try removeTree(target)
                let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode_t(entry.mode & 0o7777))
                guard fd >= 0 else { throw Failure("cannot create \(entry.path): \(errnoText())") }
                defer { close(fd) }
                try reader.copyContents(of: entry, to: fd)
                fchmod(fd, mode_t(entry.mode & 0o7777))
            case .symlink:
                try removeTree(target)
                guard symlink(entry.linkTarget, target) == 0 else { throw Failure("cannot create symlink \(entry.path): \(errnoText())") }
            case .hardlink:
                let source = try resolveInside(root: root, try cleanComponents(entry.linkTarget), create: false)
                try removeTree(target)
                guard link(source, target) == 0 else { throw Failure("cannot link \(entry.path) to \(entry.linkTarget): \(errnoText())") }
            case .other:
                continue  // devices and FIFOs: the runtime provides /dev
            }
            if getuid() == 0 { lchown(target, uid_t(entry.uid), gid_t(entry.gid)) }
        }
        return count
    }

    /// The path's components without "." and empty ones; refuses "..": a layer has no business above its root.
    static func cleanComponents(_ path: String) throws -> [String] {
        var components: [String] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            guard part != ".." else { throw Failure("layer entry \(path) climbs out of the root with '..'") }
            components.append(String(part))
        }
        return components
    }

    /// The host path of `components` under `root`, following symbolic links as if `root` were `/` (so nothing
    /// escapes it), creating missing directories when `create`.
    static func resolveInside(root: String, _ components: [String], create: Bool) throws -> String {
        var resolved: [String] = []
        var pending = components
        var hops = 0
        while !pending.isEmpty {
            let part = pending.removeFirst()
            if part == "." || part.isEmpty { continue }
            if part == ".." {
                if !resolved.isEmpty { resolved.removeLast() }
                continue
            }
            let candidate = root + "/" + (resolved + [part]).joined(separator: "/")
            var info = stat()
            if lstat(candidate, &info) != 0 {
                guard create else { throw Failure("\(components.joined(separator: "/")) does not exist in the layers so far") }
                guard mkdir(candidate, 0o755) == 0 else { throw Failure("cannot create directory \(candidate): \(errnoText())") }
                resolved.append(part)
                continue
            }
            if (info.st_mode & S_IFMT) == S_IFLNK {
                hops += 1
                guard hops <= 40 else { throw Failure("too many symbolic links under \(components.joined(separator: "/"))") }
                let target = try FileManager.default.destinationOfSymbolicLink(atPath: candidate)
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
                continue
            }
            resolved.append(part)
        }
        return resolved.isEmpty ? root : root + "/" + resolved.joined(separator: "/")
    }

    /// Removes whatever is at `path` (a file, a link — not its target — or a whole directory); nothing if absent.
    static func removeTree(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw Failure("cannot remove \(path): \(error)")
        }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }

    // MARK: - gzip

    /// Inflates a gzip stream chunk by chunk into a file (layers can be far larger than memory should hold).
    static func gunzip(_ input: FileHandle, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let output = FileHandle(forWritingAtPath: path) else {
            throw Failure("cannot create \(path)")
        }
        defer { try? output.close() }
        var stream = z_stream()
        // 15 + 16: a gzip header and trailer (with its CRC, which zlib checks).
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure("zlib could not start inflating")
        }
        defer { inflateEnd(&stream) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var finished = false
        while !finished {
            guard let chunk = try input.read(upToCount: 1 << 16), !chunk.isEmpty else {
                throw Failure("the layer's gzip stream ends early (truncated or corrupt)")
            }
            var bytes = [UInt8](chunk)
            let consumedAll: Bool = try bytes.withUnsafeMutableBufferPointer { source in
                stream.next_in = source.baseAddress
                stream.avail_in = uInt(source.count)
                repeat {
                    let status = buffer.withUnsafeMutableBufferPointer { out -> Int32 in
                        stream.next_out = out.baseAddress
                        stream.avail_out = uInt(out.count)
                        return inflate(&stream, Z_NO_FLUSH)
                    }
                    guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else {
                        throw Failure("the layer's gzip stream is corrupt (zlib status \(status))")
                    }
                    let produced = buffer.count - Int(stream.avail_out)
                    if produced > 0 { output.write(Data(buffer[0..<produced])) }
                    if status == Z_STREAM_END { return true }
                } while stream.avail_out == 0 || stream.avail_in > 0
                return false
            }
            finished = consumedAll
        }
    }
}

/// Reads a tar stream entry by entry: ustar headers, pax extended headers (path, linkpath, size) and GNU long
/// names; the caller copies a file's contents or leaves them to be skipped.
struct TarReader {
    enum Kind { case file, directory, symlink, hardlink, other }

    struct Entry {
        var path: String
        var kind: Kind
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32
        var size: UInt64
        var linkTarget: String
    }

    private let input: FileHandle
    /// Bytes of the current entry's contents (and padding) not yet read.
    private var unread: UInt64 = 0

    init(_ input: FileHandle) {
        self.input = input
    }

    mutating func next() throws -> Entry? {
        try skip(unread)
        unread = 0
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        while true {
            guard let header = try input.read(upToCount: 512), header.count == 512 else { return nil }
            let bytes = [UInt8](header)
            if bytes.allSatisfy({ $0 == 0 }) { return nil }  // end of archive
            try Self.checkChecksum(bytes)
            let size = try Self.number(bytes[124..<136])
            let type = bytes[156]
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
                let data = try readPadded(size)
                if type == UInt8(ascii: "x") {
                    pax.merge(Self.paxRecords(data)) { _, new in new }
                } else if type == UInt8(ascii: "L") {
                    longName = Self.string(data[...])
                } else if type == UInt8(ascii: "K") {
                    longLink = Self.string(data[...])
                }
                continue
            default:
                break
            }
            var name = Self.string(bytes[0..<100])
            let prefix = Self.string(bytes[345..<500])
            if Array(bytes[257..<262]) == Array("ustar".utf8), !prefix.isEmpty { name = prefix + "/" + name }
            let entrySize = pax["size"].flatMap(UInt64.init) ?? size
            var entry = Entry(
                path: pax["path"] ?? longName ?? name,
                kind: .other,
                mode: UInt32(truncatingIfNeeded: try Self.number(bytes[100..<108])),
                uid: UInt32(truncatingIfNeeded: try Self.number(bytes[108..<116])),
                gid: UInt32(truncatingIfNeeded: try Self.number(bytes[116..<124])),
                size: entrySize,
                linkTarget: pax["linkpath"] ?? longLink ?? Self.string(bytes[157..<257]))
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): entry.kind = entry.path.hasSuffix("/") ? .directory : .file
            case UInt8(ascii: "5"): entry.kind = .directory
            case UInt8(ascii: "2"): entry.kind = .symlink
            case UInt8(ascii: "1"): entry.kind = .hardlink
            default: entry.kind = .other
            }
            unread = Self.padded(entry.kind == .file || entry.kind == .other ? entrySize : 0)
            if entry.kind == .file { fileRemaining = entrySize }
            return entry
        }
    }

    private var fileRemaining: UInt64 = 0

    /// Copies the current file entry's contents to `fd`.
    mutating func copyContents(of entry: Entry, to fd: Int32) throws {
        var remaining = fileRemaining
        while remaining > 0 {
            let count = Int(min(remaining, 1 << 16))
            guard let chunk = try input.read(upToCount: count), chunk.count == count else {
                throw LayerUnpacker.Failure("the layer ends inside \(entry.path) (truncated)")
            }
            let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, count) }
            guard written == count else { throw LayerUnpacker.Failure("cannot write \(entry.path): \(LayerUnpacker.errnoText())") }
            remaining -= UInt64(count)
        }
        unread -= fileRemaining
        fileRemaining = 0
    }

    private mutating func readPadded(_ size: UInt64) throws -> [UInt8] {
        guard size <= 1 << 20 else { throw LayerUnpacker.Failure("a tar extended header of \(size) bytes is too large") }
        guard let data = try input.read(upToCount: Int(size)), data.count == Int(size) else {
            throw LayerUnpacker.Failure("the layer ends inside an extended header (truncated)")
        }
        try skip(Self.padded(size) - size)
        return [UInt8](data)
    }

    private func skip(_ count: UInt64) throws {
        guard count > 0 else { return }
        try input.seek(toOffset: try input.offset() + count)
    }

    static func padded(_ size: UInt64) -> UInt64 { (size + 511) / 512 * 512 }

    static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal field, or base-256 when its top bit is set (GNU, for large sizes and ids).
    static func number(_ bytes: ArraySlice<UInt8>) throws -> UInt64 {
        if let first = bytes.first, first & 0x80 != 0 {
            return bytes.dropFirst().reduce(UInt64(first & 0x7F)) { $0 << 8 | UInt64($1) }
        }
        let text = string(bytes).trimmingCharacters(in: .whitespaces)
        if text.isEmpty { return 0 }
        guard let value = UInt64(text, radix: 8) else { throw LayerUnpacker.Failure("a tar header holds '\(text)' where a number belongs (corrupt layer)") }
        return value
    }

    static func checkChecksum(_ header: [UInt8]) throws {
        let stored = try number(header[148..<156])
        var sum: UInt64 = 0
        for (index, byte) in header.enumerated() { sum += (148..<156).contains(index) ? 32 : UInt64(byte) }
        guard sum == stored else { throw LayerUnpacker.Failure("a tar header's checksum does not match (corrupt layer)") }
    }

    /// "LEN key=value\n" records.
    static func paxRecords(_ data: [UInt8]) -> [String: String] {
        var records: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let space = line.firstIndex(of: " "), let equals = line[space...].firstIndex(of: "=") else { continue }
            records[String(line[line.index(after: space)..<equals])] = String(line[line.index(after: equals)...])
        }
        return records
    }
}

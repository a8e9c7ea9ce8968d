#if canImport(Glibc)
import Glibc
#endif

/// Thin, checked wrappers over POSIX file calls: every failure becomes a `StorageError` that names the path.
enum DurableFile {
    static func errnoMessage(_ code: Int32 = errno) -> String {
        String(cString: strerror(code))
    }

    static func ioError(_ operation: String, _ path: String, _ code: Int32 = errno) -> StorageError {
        if code == ENOSPC || code == EDQUOT {
            return StorageError(.diskFull, "\(operation) \(path): the disk is full; free space and restart the controller")
        }
        return StorageError(.io, "\(operation) \(path): \(errnoMessage(code))")
    }

    static func open(_ path: String, flags: Int32, mode: mode_t = 0o600) throws -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ioError("open", path) }
        return fd
    }

    /// Writes all of `bytes`, retrying short writes and EINTR.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { raw in
                Glibc.write(fd, raw.baseAddress, raw.count)
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw ioError("write", path)
            }
            offset += written
        }
    }

    /// fsync, and a failure is fatal: after a failed fsync the page cache may have dropped dirty pages,
    /// so retrying could report success for data that never reached the disk.
    static func sync(_ fd: Int32, path: String) throws {
        if fsync(fd) != 0 {
            throw StorageError(
                .fsyncFailed,
                "fsync \(path) failed: \(errnoMessage()); the controller stops because its writes may be lost. Check the disk, then restart")
        }
    }

    /// fdatasync: the data and whatever metadata reading it back needs (the size of an appended file), without
    /// the timestamps `fsync` also writes. Failure is as fatal as for `sync`.
    static func syncData(_ fd: Int32, path: String) throws {
        if fdatasync(fd) != 0 {
            throw StorageError(
                .fsyncFailed,
                "fdatasync \(path) failed: \(errnoMessage()); the controller stops because its writes may be lost. Check the disk, then restart")
        }
    }

    static func syncDirectory(_ path: String) throws {
        let fd = try open(path, flags: O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try sync(fd, path: path)
    }

    static func readAll(_ path: String) throws -> [UInt8] {
        let fd = try open(path, flags: O_RDONLY)
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ioError("stat", path) }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { raw in
                pread(fd, raw.baseAddress! + offset, raw.count - offset, off_t(offset))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw ioError("read", path)
            }
            if count == 0 { break }
            offset += count
        }
        return Array(bytes[..<offset])
    }

    static func truncate(_ path: String, to length: Int) throws {
        let fd = try open(path, flags: O_WRONLY)
        defer { close(fd) }
        guard ftruncate(fd, off_t(length)) == 0 else { throw ioError("truncate", path) }
        try sync(fd, path: path)
    }

    /// Creates `path` and any missing parents (mode 0700).
    static func createDirectory(_ path: String) throws {
        if mkdir(path, 0o700) == 0 || errno == EEXIST { return }
        guard errno == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex else {
            throw ioError("mkdir", path)
        }
        try createDirectory(String(path[..<slash]))
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw ioError("mkdir", path) }
    }

    static func list(_ directory: String) throws -> [String] {
        guard let dir = opendir(directory) else { throw ioError("opendir", directory) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw ioError("unlink", path) }
    }

    static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw ioError("rename", from) }
    }

    /// Writes a file atomically: temp file, fsync, rename over the target, fsync the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws {
        let temporary = path + ".tmp"
        let fd = try open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try writeAll(fd, bytes, path: temporary)
            try sync(fd, path: temporary)
        } catch {
            close(fd)
            try? remove(temporary)
            throw error
        }
        close(fd)
        try rename(temporary, path)
        try syncDirectory(directory)
    }
}

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Reading and writing small secret files (credentials, the CA key).
///
/// Writes are atomic and private: the text goes to a temporary file in the same directory, created with
/// mode 0600, is fsynced, and is renamed over the target, then the directory is fsynced. A crash leaves
/// either the old file or the new one, never half a key, and the key is never readable by others, not
/// even for a moment.
enum SecureFile {
    /// Refuse to read more than this: credentials are a few kilobytes, so a large file is the wrong file.
    static let maximumSize = 1 << 20

    /// Atomically replaces (or creates) `path` with `text`, mode 0600.
    /// - Parameter what: What the file holds, for error messages ("credentials", "the cluster CA").
    static func save(_ text: String, to path: String, what: String) throws {
        let (directory, name) = split(path)
        let temporary = "\(directory)/.\(name).tmp-\(UInt64.random(in: .min ... .max))"
        func failure(_ step: String, _ errorNumber: Int32 = errno) -> PKIError {
            PKIError(
                code: .fileAccess,
                message: "cannot write \(what) to \(path): \(step) failed: \(describe(errorNumber))"
            )
        }

        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw failure("creating \(temporary)") }
        var renamed = false
        defer { if !renamed { unlink(temporary) } }
        do {
            defer { close(descriptor) }
            // open's mode is filtered by the umask; fchmod makes it exactly 0600 whatever the umask.
            guard fchmod(descriptor, 0o600) == 0 else { throw failure("chmod 0600") }
            var bytes = Array(text.utf8)[...]
            while !bytes.isEmpty {
                let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw failure("write")
                }
                bytes = bytes.dropFirst(written)
            }
            guard fsync(descriptor) == 0 else { throw failure("fsync") }
        }
        guard rename(temporary, path) == 0 else { throw failure("rename from \(temporary)") }
        renamed = true

        // Make the rename itself durable. Best effort: some file systems refuse fsync on a directory.
        let directoryDescriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            _ = fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    /// Reads `path` as UTF-8 text.
    /// - Parameters:
    ///   - what: What the file holds, for error messages.
    ///   - remedy: What to do when it is missing ("run `flotilla-controller --init` or pass --credentials").
    static func contents(of path: String, what: String, remedy: String) throws -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let errorNumber = errno
            if errorNumber == ENOENT {
                throw PKIError(code: .fileNotFound, message: "no \(what) at \(path); \(remedy)")
            }
            throw PKIError(code: .fileAccess, message: "cannot read \(what) at \(path): \(describe(errorNumber))")
        }
        defer { close(descriptor) }

        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                let errorNumber = errno
                if errorNumber == EINTR { continue }
                throw PKIError(code: .fileAccess, message: "cannot read \(what) at \(path): \(describe(errorNumber))")
            }
            if count == 0 { break }
            bytes += chunk[..<count]
            guard bytes.count <= maximumSize else {
                throw PKIError(
                    code: .fileAccess,
                    message: "\(what) at \(path) is larger than \(maximumSize) bytes; is this the right file? \(remedy)"
                )
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The directory and file name of `path`; the directory is "." for a bare name.
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = path[..<slash]
        return (directory.isEmpty ? "/" : String(directory), String(path[path.index(after: slash)...]))
    }

    private static func describe(_ errorNumber: Int32) -> String {
        String(cString: strerror(errorNumber))
    }
}

import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A task's log file, `task.log`, appended record by record and rotated before it would grow past its cap:
/// `task.log` becomes `task.log.1`, `.1` becomes `.2`, … and the oldest (`.N`) is dropped, so a task never
/// holds more than (N + 1) × cap bytes. With N = 0 the file starts over empty.
///
/// A write that fails (disk full, I/O error) never stops the agent: the record is dropped and counted, and
/// the first drop is logged once as a warning.
final class RotatingLogFile: Sendable {
    let path: String
    let maxBytes: Int
    let rotatedFiles: Int
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var descriptor: Int32 = -1
        var size = 0
        var dropped = 0
        var warned = false
        var closed = false
    }

    init(path: String, maxBytes: Int, rotatedFiles: Int, logger: Logger) {
        self.path = path
        self.maxBytes = max(maxBytes, 1)
        self.rotatedFiles = max(rotatedFiles, 0)
        self.logger = logger
    }

    /// Records dropped because they could not be written.
    var droppedRecords: Int { state.withLock { $0.dropped } }

    /// Appends one record (rotating first when it would not fit). False when it was dropped.
    @discardableResult
    func append(_ record: TaskLogRecord) -> Bool {
        let bytes = record.encoded
        return state.withLock { state -> Bool in
            guard !state.closed else { return false }
            if state.descriptor >= 0, state.size > 0, state.size + bytes.count > maxBytes {
                rotate(&state)
            }
            if state.descriptor < 0 { open(&state, truncate: false) }
            let error = state.descriptor < 0 ? errno : Self.writeAll(state.descriptor, bytes)
            guard error != 0 else {
                state.size += bytes.count
                return true
            }
            state.dropped += 1
            if !state.warned {
                state.warned = true
                logger.warning("task log write failed; dropping lines until it works again", metadata: [
                    "file": "\(path)", "error": "\(String(cString: strerror(error)))"])
            }
            return false
        }
    }

    /// Closes the file; later appends are dropped silently.
    func close() {
        state.withLock { state in
            state.closed = true
            if state.descriptor >= 0 { Glibc.close(state.descriptor) }
            state.descriptor = -1
        }
    }

    private func open(_ state: inout State, truncate: Bool) {
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o640)
        guard descriptor >= 0 else { return }
        var info = stat()
        state.size = fstat(descriptor, &info) == 0 ? Int(info.st_size) : 0
        state.descriptor = descriptor
    }

    private func rotate(_ state: inout State) {
        Glibc.close(state.descriptor)
        state.descriptor = -1
        guard rotatedFiles > 0 else {
            open(&state, truncate: true)
            return
        }
        for index in stride(from: rotatedFiles - 1, through: 1, by: -1) {
            _ = rename("\(path).\(index)", "\(path).\(index + 1)")
        }
        _ = rename(path, "\(path).1")
        open(&state, truncate: false)
    }

    /// Writes every byte (retrying short writes and EINTR); 0 or the errno of the failure.
    private static func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBytes { buffer -> Int32 in
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += written
            }
            return 0
        }
    }
}

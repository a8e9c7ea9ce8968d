import Logging
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Reads one task's stdout and stderr FIFOs on an event loop and appends their lines to the task's rotating
/// log file. The collector opens each FIFO read-write: it never sees end-of-file (it is a writer too), so it
/// reads across the task's restarts until it is closed, and a new collector (after an agent restart) opens
/// the same FIFOs and finds what the task wrote meanwhile in the pipe buffer.
final class TaskLogCollector: Sendable {
    let file: RotatingLogFile
    private let channels: [any Channel]

    private init(file: RotatingLogFile, channels: [any Channel]) {
        self.file = file
        self.channels = channels
    }

    /// Opens (making them when missing) the task's FIFOs in `directory` and starts reading them.
    static func open(
        directory: String, configuration: TaskLogConfiguration, group: any EventLoopGroup, logger: Logger
    ) async throws -> TaskLogCollector {
        let file = RotatingLogFile(
            path: directory + "/" + TaskLogs.fileName, maxBytes: configuration.maxFileBytes,
            rotatedFiles: configuration.rotatedFiles, logger: logger)
        var channels: [any Channel] = []
        do {
            for stream in TaskLogStream.allCases {
                let path = TaskLogs.pipePath(directory, stream)
                if mkfifo(path, 0o600) != 0 && errno != EEXIST {
                    throw DriverError("could not make the task's \(stream.rawValue) pipe \(path): \(String(cString: strerror(errno)))")
                }
                let descriptor = Glibc.open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
                guard descriptor >= 0 else {
                    throw DriverError("could not open the task's \(stream.rawValue) pipe \(path): \(String(cString: strerror(errno)))")
                }
                // Room for what the task writes while nobody reads (an agent restart); best effort: an
                // unprivileged agent may be held to /proc/sys/fs/pipe-max-size.
                _ = fcntl(descriptor, 1031 /* F_SETPIPE_SZ */, Int32(configuration.pipeBufferBytes))
                let maxLine = configuration.maxLineBytes
                do {
                    let channel = try await NIOPipeBootstrap(group: group)
                        .channelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    LineSplitter(stream: stream, file: file, maxLineBytes: maxLine))
                            }
                        }
                        .takingOwnershipOfDescriptor(input: descriptor).get()
                    channels.append(channel)
                } catch {
                    Glibc.close(descriptor)
                    throw error
                }
            }
        } catch {
            for channel in channels { try? await channel.close() }
            file.close()
            throw error
        }
        return TaskLogCollector(file: file, channels: channels)
    }

    /// Stops reading (what is still in the pipes stays there for the next collector) and closes the file.
    func close() async {
        for channel in channels {
            try? await channel.close()
            // One more turn of the loop: the handler has written its last piece by then.
            try? await channel.eventLoop.submit {}.get()
        }
        file.close()
    }
}

/// Splits a stream's bytes into lines (pieces of at most `maxLineBytes` for longer ones) and appends each as
/// a record, stamped with the time it was read.
final class LineSplitter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let stream: TaskLogStream
    private let file: RotatingLogFile
    private let maxLineBytes: Int
    /// The start of a line whose newline has not arrived yet.
    private var pending: [UInt8] = []

    init(stream: TaskLogStream, file: RotatingLogFile, maxLineBytes: Int) {
        self.stream = stream
        self.file = file
        self.maxLineBytes = max(maxLineBytes, 1)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { bytes in
            var start = 0
            while start < bytes.count {
                let rest = bytes[start...]
                if let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
                    pending += bytes[start..<newline]
                    emitPieces()
                    emit(pending, partial: false)
                    pending.removeAll(keepingCapacity: true)
                    start = newline + 1
                } else {
                    pending += rest
                    emitPieces()
                    start = bytes.count
                }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed before the line ended: keep what was read.
        if !pending.isEmpty { emit(pending, partial: true) }
        pending = []
        context.fireChannelInactive()
    }

    /// Writes full-size pieces of an over-long line, keeping the rest pending.
    private func emitPieces() {
        while pending.count > maxLineBytes {
            emit(pending[..<maxLineBytes], partial: true)
            pending.removeFirst(maxLineBytes)
        }
    }

    private func emit(_ text: some Collection<UInt8>, partial: Bool) {
        file.append(TaskLogRecord(unixNanos: TaskLogTime.now(), stream: stream, partial: partial, text: Array(text)))
    }
}

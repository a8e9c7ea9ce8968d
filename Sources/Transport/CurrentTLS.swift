public import NIOSSL
import Synchronization

/// The TLS context a process uses now. A renewed certificate replaces it; every new connection reads it, and
/// connections already open keep the context they were made with, so renewal drops nothing.
public final class CurrentTLS: Sendable {
    private let context: Mutex<NIOSSLContext>

    public init(_ context: NIOSSLContext) {
        self.context = Mutex(context)
    }

    public var current: NIOSSLContext { context.withLock { $0 } }

    public func replace(_ newContext: NIOSSLContext) {
        context.withLock { $0 = newContext }
    }
}

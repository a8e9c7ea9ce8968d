public import Balancing
import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix

/// The balancer's threads: HTTP services run on SwiftNIO event loops, TCP services on relay loops of the
/// balancer's own (an epoll loop each, no channel pipeline: see `RelayLoop`). Each kind has `workers` threads,
/// started when the first service of that kind needs them.
public final class ProxyThreads: Sendable {
    public let workers: Int
    private let groups = NIOLockedValueBox<(http: MultiThreadedEventLoopGroup?, tcp: RelayLoopGroup?)>((nil, nil))

    public init(workers: Int) {
        self.workers = max(1, workers)
    }

    /// The threads that serve `mode`.
    public func group(for mode: ProxyMode) throws -> any EventLoopGroup {
        try groups.withLockedValue { groups in
            switch mode {
            case .http:
                if let http = groups.http { return http }
                let http = MultiThreadedEventLoopGroup(numberOfThreads: workers)
                groups.http = http
                return http
            case .tcp:
                if let tcp = groups.tcp { return tcp }
                let tcp = try RelayLoopGroup(numberOfThreads: workers)
                groups.tcp = tcp
                return tcp
            }
        }
    }

    /// Stops every thread; call after the listeners have closed.
    public func shutdown() async {
        let (http, tcp) = groups.withLockedValue { groups in
            defer { groups = (nil, nil) }
            return groups
        }
        try? await http?.shutdownGracefully()
        try? await tcp?.shutdownGracefully()
    }
}

public import Balancing
import Foundation
import NIOCore

/// The balancer without a cluster: one listener in front of a fixed list of backends, for users who want just a
/// proxy and for benchmarks (`flotilla-agent proxy`).
public struct StandaloneProxyConfig: Sendable, Equatable {
    public var listen: String
    public var backends: [Backend]
    public var settings: ProxySettings
    /// Event loops (threads) serving connections.
    public var workers: Int

    public init(listen: String, backends: [Backend], settings: ProxySettings = .init(), workers: Int = 1) {
        self.listen = listen
        self.backends = backends
        self.settings = settings
        self.workers = workers
    }

    /// Parses `HOST:PORT` (or `[V6]:PORT`, or `:PORT` for every address) into host and port.
    public static func split(_ address: String) throws -> (host: String, port: Int) {
        let (host, portText): (Substring, Substring)
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            host = address[address.index(after: address.startIndex)..<close]
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":") else { throw StandaloneProxyError.badAddress(address) }
            portText = rest.dropFirst()
        } else {
            guard let colon = address.lastIndex(of: ":") else { throw StandaloneProxyError.badAddress(address) }
            host = address[..<colon]
            portText = address[address.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else { throw StandaloneProxyError.badAddress(address) }
        return (host.isEmpty ? "0.0.0.0" : String(host), port)
    }

    /// A backend from `HOST:PORT`; host names are resolved once, here (to their first IPv4 address, else IPv6).
    public static func backend(_ address: String, weight: UInt32 = 1) throws -> Backend {
        let (host, port) = try split(address)
        guard (1...65535).contains(port) else { throw StandaloneProxyError.badAddress(address) }
        guard weight <= 256 else { throw StandaloneProxyError.badWeight(address, weight) }
        return Backend(id: address, host: try resolve(host), port: port, weight: weight)
    }

    static func resolve(_ host: String) throws -> String {
        if (try? SocketAddress(ipAddress: host, port: 0)) != nil { return host }
        guard let address = try? SocketAddress.makeAddressResolvingHost(host, port: 0), let ip = address.ipAddress else {
            throw StandaloneProxyError.unresolvable(host)
        }
        return ip
    }
}

public enum StandaloneProxyError: Error, CustomStringConvertible, Equatable {
    case badAddress(String)
    case badWeight(String, UInt32)
    case unresolvable(String)
    case noBackends

    public var description: String {
        switch self {
        case .badAddress(let text): "'\(text)' is not an address: write HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
        case .badWeight(let backend, let weight): "backend \(backend) has weight \(weight): weights go from 0 (no new connections) to 256"
        case .unresolvable(let host): "cannot resolve '\(host)': give an IP address or a name this host resolves"
        case .noBackends: "no backends: give at least one --backend HOST:PORT"
        }
    }
}

/// A running standalone proxy.
public final class StandaloneProxy: Sendable {
    public let listener: ProxyListener
    private let threads: ProxyThreads

    private init(listener: ProxyListener, threads: ProxyThreads) {
        self.listener = listener
        self.threads = threads
    }

    public static func start(_ config: StandaloneProxyConfig) async throws -> StandaloneProxy {
        guard !config.backends.isEmpty else { throw StandaloneProxyError.noBackends }
        let (host, port) = try StandaloneProxyConfig.split(config.listen)
        let threads = ProxyThreads(workers: config.workers)
        do {
            let service = try ServiceProxy(name: config.listen, settings: config.settings, backends: config.backends, threads: threads)
            let listener = try await ProxyListener.bind(host: host, port: port, service: service)
            return StandaloneProxy(listener: listener, threads: threads)
        } catch {
            await threads.shutdown()
            throw error
        }
    }

    public var port: Int { listener.port }

    public func stats() async throws -> ServiceStats { try await listener.service.stats() }

    public func stop() async {
        await listener.close()
        listener.service.retire()
        await threads.shutdown()
    }
}

import Balancing
import NIOCore
import NIOPosix

/// One accepted TCP connection: chooses a backend, connects (another backend after a failure, up to the
/// service's retries, so the client never sees a dead backend), then splices the two connections.
final class TCPForwarder {
    private let service: LoopService
    private let client: any Channel
    private let clientSide: SpliceHandler
    private let clientHash: UInt64
    private var tried: [BackendState] = []
    private var clientGone = false

    init(service: LoopService, client: any Channel, clientSide: SpliceHandler) {
        self.service = service
        self.client = client
        self.clientSide = clientSide
        self.clientHash = ClientHash.of((client.remoteAddress?.ipAddress ?? "").utf8)
        clientSide.onClose = { [weak self] _ in self?.clientGone = true }
    }

    func start() { connectNext() }

    private func connectNext() {
        let settings = service.settings
        guard !clientGone, !service.retired,
              let backend = service.balancer.pick(clientHash: clientHash, nowMillis: Clock.nowMillis(), avoiding: tried)
        else {
            service.countRejected()
            client.close(promise: nil)
            return
        }
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: backend.backend.host, port: backend.backend.port)
        } catch {
            failed(backend)
            return
        }
        service.balancer.opened(backend)
        let started = Clock.nowMicros()
        ClientBootstrap(group: client.eventLoop)
            .connectTimeout(.milliseconds(settings.connectTimeoutMillis))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel): self.connected(channel, to: backend, startedMicros: started)
                case .failure:
                    self.service.balancer.closed(backend)
                    self.failed(backend)
                }
            }
    }

    private func failed(_ backend: BackendState) {
        service.balancer.failed(backend, nowMillis: Clock.nowMillis())
        service.count(backend) { $0.errors += 1 }
        tried.append(backend)
        if tried.count <= service.settings.retries, !clientGone {
            service.count(backend) { $0.retries += 1 }
            connectNext()
        } else {
            service.countRejected()
            client.close(promise: nil)
        }
    }

    private func connected(_ channel: any Channel, to backend: BackendState, startedMicros: UInt64) {
        let service = self.service
        service.balancer.succeeded(backend, nowMillis: Clock.nowMillis())
        service.count(backend) {
            $0.connections += 1
            $0.latency.record(micros: Clock.nowMicros() &- startedMicros)
        }
        guard !clientGone else {
            service.balancer.closed(backend)
            channel.close(promise: nil)
            return
        }
        let backendSide = SpliceHandler()
        let clientSide = self.clientSide
        backendSide.onClose = { backendSide in
            service.balancer.closed(backend)
            let fromClient = clientSide.bytesRead
            service.count(backend) {
                $0.bytesOut += fromClient
                $0.bytesIn += backendSide.bytesRead
            }
        }
        do {
            try channel.pipeline.syncOperations.addHandler(backendSide)
        } catch {
            channel.close(promise: nil)
            client.close(promise: nil)
            return
        }
        if service.settings.proxyProtocol {
            channel.write(ProxyProtocolHeader.encode(source: client.remoteAddress, destination: client.localAddress), promise: nil)
        }
        SpliceHandler.pair(clientSide, backendSide)
        watchIdle(clientSide, backendSide, channel, moved: 0)
    }

    /// Closes the pair after a whole idle timeout without a byte either way. A timer per idle period rather
    /// than an IdleStateHandler, which would read the clock on every read and write of the hot path.
    private func watchIdle(_ clientSide: SpliceHandler, _ backendSide: SpliceHandler, _ backend: any Channel, moved: UInt64) {
        let client = self.client
        let period = TimeAmount.milliseconds(service.settings.idleTimeoutMillis)
        client.eventLoop.assumeIsolated().scheduleTask(in: period) {
            guard client.isActive || backend.isActive else { return }
            let now = clientSide.bytesRead &+ backendSide.bytesRead
            if now == moved {
                client.close(promise: nil)
                backend.close(promise: nil)
            } else {
                self.watchIdle(clientSide, backendSide, backend, moved: now)
            }
        }
    }
}

import CEpoll
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A listening socket on one relay loop, for a TCP-mode service. With several loops each binds its own socket
/// with SO_REUSEPORT, so the kernel spreads new connections over the loops and no accept crosses threads.
final class RelayListener: RelayTarget {
    private unowned let loop: RelayLoop
    private let service: ServiceProxy
    private let socket: Int32
    private var token: UInt64 = 0
    private var open = true
    let port: Int

    private init(loop: RelayLoop, service: ServiceProxy, socket: Int32, port: Int) {
        self.loop = loop
        self.service = service
        self.socket = socket
        self.port = port
    }

    /// Binds `address` and starts accepting on `loop`; call on the loop.
    static func start(on loop: RelayLoop, address: SocketAddress, sharePort: Bool, service: ServiceProxy) throws -> RelayListener {
        let fd = Glibc.socket(Int32(address.protocol.rawValue), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RelayError.system("socket", errno) }
        do {
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            if sharePort { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) }
            guard address.withSockAddr({ Glibc.bind(fd, $0, socklen_t($1)) }) == 0 else { throw RelayError.system("bind", errno) }
            guard Glibc.listen(fd, 1024) == 0 else { throw RelayError.system("listen", errno) }
            let listener = RelayListener(loop: loop, service: service, socket: fd, port: Self.localAddress(of: fd)?.port ?? address.port ?? 0)
            listener.token = try loop.register(fd, target: listener, tag: 0)
            return listener
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Stops accepting; call on the loop. Connections already accepted carry on.
    func close() {
        guard open else { return }
        open = false
        loop.unregister(token)
        Glibc.close(socket)
    }

    func relayEvent(_ events: UInt32, tag: UInt32) {
        // Edge-triggered: accept until the queue is empty.
        while open {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    flotilla_accept4(socket, $0, &length, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                }
            }
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED: continue
                case EMFILE, ENFILE:
                    // Out of descriptors: the waiting connections stay queued; look again shortly.
                    loop.addTimer(at: .now() + .milliseconds(100)) { [weak self] in self?.relayEvent(0, tag: 0) }
                    return
                default: return
                }
            }
            accepted(fd, peer: storage)
        }
    }

    private func accepted(_ fd: Int32, peer: sockaddr_storage) {
        guard let local = service.local(on: loop), !local.retired else {
            Glibc.close(fd)
            return
        }
        RelayConnection.setNoDelay(fd)
        let clientAddress = Self.address(peer)
        let localAddress = local.settings.proxyProtocol ? Self.localAddress(of: fd) : nil
        RelayConnection(loop: loop, service: local, client: fd, clientAddress: clientAddress, localAddress: localAddress).start()
    }

    static func localAddress(of fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return result == 0 ? address(storage) : nil
    }

    static func address(_ storage: sockaddr_storage) -> SocketAddress? {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee) } }
        case AF_INET6:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee) } }
        default:
            return nil
        }
    }
}

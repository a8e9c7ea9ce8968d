import Balancing
import CEpoll
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// One accepted TCP connection on a relay loop: chooses a backend and connects without blocking (another
/// backend after a refusal or a connect timeout, up to the service's retries, so the client never sees a dead
/// backend), then moves bytes both ways until both sides have finished.
///
/// Per direction, bytes are read into the loop's shared buffer and written on at once; only what the receiver
/// cannot take yet is kept, and the sender is not read again until it has gone (backpressure: the rest waits in
/// the kernel). A read shorter than the buffer means the socket is drained, because the edge-triggered epoll
/// reports every later arrival, so each message costs one read and one write, as in HAProxy.
///
/// A service scaled to zero (`holdWhenEmpty`) holds a connection that finds no backend: nothing is read from
/// the client meanwhile (what it sends first waits in the kernel), and once a backend appears it goes on as a
/// new connection; at the hold timeout it is closed.
final class RelayConnection: RelayTarget, HeldConnection {
    private unowned let loop: RelayLoop
    private let service: LoopService
    private let client: Int32
    private var clientToken: UInt64 = 0
    private var backendSocket: Int32 = -1
    private var backendToken: UInt64 = 0
    private let clientHash: UInt64
    /// The PROXY v2 header to send first, when the service asks for it.
    private let proxyHeader: [UInt8]?
    private var backend: BackendState?
    private var tried: [BackendState] = []
    private var state = Phase.connecting(startedMicros: 0, deadlineMillis: 0)
    /// Client to backend, and backend to client.
    private var upstream = Direction()
    private var downstream = Direction()
    private var idleSinceMillis: UInt64 = 0
    private var bytesAtLastSweep: UInt64 = 0

    enum Phase {
        /// Waiting for the service's first backend, until the deadline.
        case held(deadlineMillis: UInt64)
        case connecting(startedMicros: UInt64, deadlineMillis: UInt64)
        case relaying
        case closed
    }

    /// One direction's bytes in flight and how far its end has come.
    struct Direction {
        var readable = false
        /// The sender hung up or failed: read on until the end instead of trusting a short read.
        var hangUp = false
        var writable = false
        var pending: UnsafeMutableRawBufferPointer?
        var pendingStart = 0
        var ended = false
        var shutDown = false
        var bytes: UInt64 = 0

        var hasPending: Bool { pending != nil }
        var finished: Bool { shutDown && pending == nil }
    }

    private static let clientTag: UInt32 = 0
    private static let backendTag: UInt32 = 1

    init(loop: RelayLoop, service: LoopService, client: Int32, clientAddress: SocketAddress?, localAddress: SocketAddress?) {
        self.loop = loop
        self.service = service
        self.client = client
        self.clientHash = ClientHash.of((clientAddress?.ipAddress ?? "").utf8)
        if service.settings.proxyProtocol {
            var header = ProxyProtocolHeader.encode(source: clientAddress, destination: localAddress)
            proxyHeader = header.readBytes(length: header.readableBytes)
        } else {
            proxyHeader = nil
        }
    }

    /// Registers the client and starts on the first backend.
    func start() {
        do {
            clientToken = try loop.register(client, target: self, tag: Self.clientTag)
        } catch {
            Glibc.close(client)
            return
        }
        loop.adopt(self)
        idleSinceMillis = Clock.nowMillis()
        connectNext()
    }

    // MARK: Connecting

    private func connectNext() {
        let now = Clock.nowMillis()
        guard !service.retired, let chosen = service.balancer.pick(clientHash: clientHash, nowMillis: now, avoiding: tried) else {
            if tried.isEmpty, service.hold(self) {
                state = .held(deadlineMillis: now &+ UInt64(max(1, service.settings.holdTimeoutMillis)))
                return
            }
            service.countRejected()
            close()
            return
        }
        guard let address = try? SocketAddress(ipAddress: chosen.backend.host, port: chosen.backend.port) else {
            attemptFailed(chosen, opened: false)
            return
        }
        let fd = Glibc.socket(Int32(address.protocol.rawValue), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            attemptFailed(chosen, opened: false)
            return
        }
        Self.setNoDelay(fd)
        let result = address.withSockAddr { pointer, length in Glibc.connect(fd, pointer, socklen_t(length)) }
        guard result == 0 || errno == EINPROGRESS else {
            Glibc.close(fd)
            attemptFailed(chosen, opened: false)
            return
        }
        guard let token = try? loop.register(fd, target: self, tag: Self.backendTag) else {
            Glibc.close(fd)
            attemptFailed(chosen, opened: false)
            return
        }
        service.balancer.opened(chosen)
        backend = chosen
        backendSocket = fd
        backendToken = token
        state = .connecting(startedMicros: Clock.nowMicros(), deadlineMillis: now &+ UInt64(max(1, service.settings.connectTimeoutMillis)))
    }

    /// This backend could not be reached: count it, and try the next while retries are left.
    private func attemptFailed(_ failed: BackendState, opened: Bool) {
        if opened {
            service.balancer.closed(failed)
            loop.unregister(backendToken)
            Glibc.close(backendSocket)
            backendSocket = -1
            backend = nil
        }
        service.balancer.failed(failed, nowMillis: Clock.nowMillis())
        service.count(failed) { $0.errors += 1 }
        tried.append(failed)
        if tried.count <= service.settings.retries {
            service.count(failed) { $0.retries += 1 }
            connectNext()
        } else {
            service.countRejected()
            close()
        }
    }

    private func connected(_ chosen: BackendState, startedMicros: UInt64) {
        service.balancer.succeeded(chosen, nowMillis: Clock.nowMillis())
        service.count(chosen) {
            $0.connections += 1
            $0.latency.record(micros: Clock.nowMicros() &- startedMicros)
        }
        state = .relaying
        if let proxyHeader {
            upstream.keep(proxyHeader[...])
        }
        pump()
    }

    // MARK: Events

    func relayEvent(_ events: UInt32, tag: UInt32) {
        let readable = events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        let hangUp = events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        let writable = events & (EPOLLOUT.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        if tag == Self.clientTag {
            if readable { upstream.readable = true }
            if hangUp { upstream.hangUp = true }
            if writable { downstream.writable = true }
        } else {
            if readable { downstream.readable = true }
            if hangUp { downstream.hangUp = true }
            if writable { upstream.writable = true }
        }
        switch state {
        case .held:
            // The readiness is noted above; the client's bytes wait until a backend is connected. A client that
            // reset the connection frees its place in the queue at once (a half-close still waits: it may
            // have sent its whole request).
            if tag == Self.clientTag, events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { close(reset: true) }
        case .connecting(let started, _):
            guard tag == Self.backendTag, writable || hangUp, let chosen = backend else { return }
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(backendSocket, SOL_SOCKET, SO_ERROR, &code, &length)
            if code == 0, events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) == 0 {
                connected(chosen, startedMicros: started)
            } else {
                // What was learnt about this backend's socket does not carry over to the next one.
                upstream.writable = false
                downstream.readable = false
                downstream.hangUp = false
                attemptFailed(chosen, opened: true)
            }
        case .relaying:
            pump()
        case .closed:
            return
        }
    }

    /// Moves what can move both ways; closes once both directions have ended.
    private func pump() {
        guard flow(&upstream, from: client, to: backendSocket), flow(&downstream, from: backendSocket, to: client) else {
            close(reset: true)
            return
        }
        if upstream.finished, downstream.finished { close() }
    }

    /// Forwards one direction as far as it can go now; false on a socket error (the pair is then reset).
    private func flow(_ direction: inout Direction, from source: Int32, to destination: Int32) -> Bool {
        while true {
            if direction.hasPending {
                guard direction.writable else { return true }
                switch direction.flushPending(to: destination) {
                case .failed: return false
                case .blocked: return true
                case .done: continue
                }
            }
            if direction.ended {
                if !direction.shutDown {
                    Glibc.shutdown(destination, Int32(SHUT_WR))
                    direction.shutDown = true
                }
                return true
            }
            guard direction.readable else { return true }
            let scratch = loop.scratch
            let count = Glibc.recv(source, scratch.baseAddress, scratch.count, 0)
            if count > 0 {
                direction.bytes &+= UInt64(count)
                if count < scratch.count, !direction.hangUp { direction.readable = false }
                var written = 0
                if direction.writable {
                    let sent = Glibc.send(destination, scratch.baseAddress, count, Int32(MSG_NOSIGNAL))
                    if sent >= 0 {
                        written = sent
                        // A short write means the receiver's buffer is full: its next edge says when to go on.
                        if sent < count { direction.writable = false }
                    } else if errno == EAGAIN {
                        direction.writable = false
                    } else if errno != EINTR {
                        return false
                    }
                }
                if written < count {
                    direction.keep(UnsafeRawBufferPointer(rebasing: scratch[written..<count]))
                }
            } else if count == 0 {
                direction.ended = true
                direction.readable = false
            } else if errno == EAGAIN {
                direction.readable = false
                return true
            } else if errno != EINTR {
                return false
            }
        }
    }

    // MARK: Timeouts and ending

    /// Called by the loop's sweep: the connect timeout moves on to the next backend; a connection with no byte
    /// either way for the idle timeout is closed.
    func checkTimeouts(nowMillis: UInt64) {
        switch state {
        case .held(let deadline):
            guard nowMillis >= deadline else { return }
            service.holdTimedOut(self)
            service.countRejected()
            close()
        case .connecting(_, let deadline):
            guard nowMillis >= deadline, let chosen = backend else { return }
            attemptFailed(chosen, opened: true)
        case .relaying:
            let moved = upstream.bytes &+ downstream.bytes
            if moved != bytesAtLastSweep {
                bytesAtLastSweep = moved
                idleSinceMillis = nowMillis
            } else if nowMillis &- idleSinceMillis >= UInt64(max(1, service.settings.idleTimeoutMillis)) {
                close()
            }
        case .closed:
            return
        }
    }

    /// Ends the connection at once (the loop is shutting down).
    func abort() { close(reset: true) }

    // MARK: Held

    func holdEnded(_ ending: HoldEnding) {
        guard case .held = state else { return }
        switch ending {
        case .forward:
            state = .connecting(startedMicros: 0, deadlineMillis: .max)
            idleSinceMillis = Clock.nowMillis()
            connectNext()
        case .refuse:
            service.countRejected()
            close()
        }
    }

    /// Closes both sockets; `reset` sends a reset instead of a normal end, so that a peer whose other side failed
    /// does not take a cut-off stream for a complete one.
    private func close(reset: Bool = false) {
        if case .closed = state { return }
        if case .held = state {
            service.unhold(self)
            // What the client sent while it waited was never read: closing on unread bytes would reset the
            // connection, and the client should see a plain close.
            if !reset { discardInput() }
        }
        let wasRelaying: Bool
        if case .relaying = state { wasRelaying = true } else { wasRelaying = false }
        state = .closed
        loop.unregister(clientToken)
        if reset { Self.setResetOnClose(client) }
        Glibc.close(client)
        if backendSocket >= 0 {
            loop.unregister(backendToken)
            if reset { Self.setResetOnClose(backendSocket) }
            Glibc.close(backendSocket)
            backendSocket = -1
        }
        upstream.release()
        downstream.release()
        if let backend {
            service.balancer.closed(backend)
            if wasRelaying {
                let (sent, received) = (upstream.bytes, downstream.bytes)
                service.count(backend) {
                    $0.bytesOut += sent
                    $0.bytesIn += received
                }
            }
        }
        loop.forget(self)
    }

    /// Reads and drops what the client has sent so far.
    private func discardInput() {
        let scratch = loop.scratch
        while Glibc.recv(client, scratch.baseAddress, scratch.count, 0) > 0 {}
    }

    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    private static func setResetOnClose(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    }
}

extension RelayConnection.Direction {
    enum Flush { case done, blocked, failed }

    /// Keeps bytes the receiver could not take yet (appended to any already kept).
    mutating func keep(_ bytes: UnsafeRawBufferPointer) {
        let old = pending.map { UnsafeRawBufferPointer(rebasing: $0[pendingStart...]) }
        let total = (old?.count ?? 0) + bytes.count
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 1)
        var offset = 0
        if let old, old.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<old.count]).copyMemory(from: old)
            offset = old.count
        }
        UnsafeMutableRawBufferPointer(rebasing: buffer[offset...]).copyMemory(from: bytes)
        pending?.deallocate()
        pending = buffer
        pendingStart = 0
    }

    mutating func keep(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { keep($0) }
    }

    /// Sends kept bytes; `.done` once none are left.
    mutating func flushPending(to destination: Int32) -> Flush {
        guard let buffer = pending else { return .done }
        let rest = UnsafeRawBufferPointer(rebasing: buffer[pendingStart...])
        var sent = Glibc.send(destination, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL))
        while sent < 0, errno == EINTR {
            sent = Glibc.send(destination, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL))
        }
        if sent < 0 {
            guard errno == EAGAIN else { return .failed }
            writable = false
            return .blocked
        }
        if sent == rest.count {
            buffer.deallocate()
            pending = nil
            pendingStart = 0
            return .done
        }
        pendingStart += sent
        writable = false
        return .blocked
    }

    mutating func release() {
        pending?.deallocate()
        pending = nil
    }
}

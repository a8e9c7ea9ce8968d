import CEpoll
public import Dispatch
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Something registered with a relay loop: told about its file descriptor's readiness, on the loop's thread.
protocol RelayTarget: AnyObject {
    /// `events` are epoll's bits; `tag` is what the target gave when it registered the descriptor.
    func relayEvent(_ events: UInt32, tag: UInt32)
}

/// An event loop of the balancer's own for L4 forwarding: one thread waiting on one epoll set, with no channel
/// pipeline between a socket's readiness and the code that moves its bytes (SwiftNIO's per-read machinery costs
/// more than the forwarding itself; see bench/RESULTS.md). It is a NIO `EventLoop`, so futures, `submit` and
/// `NIOLoopBoundBox` work with it, but it runs no NIO channels.
///
/// Descriptors are registered edge-triggered once, for reading and writing, and never modified: readiness is
/// tracked by the targets, so forwarding costs no `epoll_ctl` calls. Each registration gets a token (slot and
/// generation), so an event for a descriptor closed earlier in the same batch is recognised and dropped.
public final class RelayLoop: EventLoop, @unchecked Sendable {
    private let epollFD: Int32
    private let wakeFD: Int32
    /// Signalled when the loop's thread has finished.
    private let finished = DispatchSemaphore(value: 0)
    private let threadID = NIOLockedValueBox<pthread_t?>(nil)

    /// Work handed in from any thread, and whether the loop has been woken for it already.
    private let inbox = NIOLockedValueBox<(tasks: [@Sendable () -> Void], woken: Bool, stopping: Bool)>(([], false, false))

    // Loop-thread state.
    private var targets: [RelayTarget?] = []
    private var tags: [UInt32] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    private var timers: [(id: UInt64, deadline: NIODeadline, run: () -> Void)] = []
    private var nextTimerID: UInt64 = 0
    private var relays: [ObjectIdentifier: RelayConnection] = [:]
    private var sweeping = false
    /// Receive buffer shared by every connection of the loop: data is written on from here at once, and only
    /// what the other side cannot take yet is copied into that connection's own buffer.
    let scratch: UnsafeMutableRawBufferPointer
    static let scratchSize = 32 * 1024
    /// Idle and connect timeouts are checked this often.
    static let sweepInterval = TimeAmount.milliseconds(100)
    private static let wakeToken = UInt64.max

    init(name: String) throws {
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epollFD >= 0 else { throw RelayError.system("epoll_create1", errno) }
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeFD >= 0 else {
            let code = errno
            Glibc.close(epollFD)
            throw RelayError.system("eventfd", code)
        }
        scratch = .allocate(byteCount: Self.scratchSize, alignment: 16)
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = Self.wakeToken
        epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            threadID.withLockedValue { $0 = pthread_self() }
            ready.signal()
            run()
        }
        thread.name = name
        thread.start()
        ready.wait()
    }

    // MARK: EventLoop

    public var inEventLoop: Bool {
        guard let id = threadID.withLockedValue({ $0 }) else { return false }
        return pthread_equal(id, pthread_self()) != 0
    }

    public func execute(_ task: @escaping @Sendable () -> Void) {
        let wake = inbox.withLockedValue { inbox -> Bool in
            inbox.tasks.append(task)
            defer { inbox.woken = true }
            return !inbox.woken
        }
        if wake { signalWake() }
    }

    public func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise: EventLoopPromise<T> = makePromise()
        let id = NIOLockedValueBox<UInt64?>(nil)
        execute { [self] in
            let timer = addTimer(at: deadline) {
                do { promise.assumeIsolatedUnsafeUnchecked().succeed(try task()) } catch { promise.fail(error) }
            }
            id.withLockedValue { $0 = timer }
        }
        return Scheduled(promise: promise) { [self] in
            execute { [self] in
                guard let timer = id.withLockedValue({ $0 }), cancelTimer(timer) else { return }
                promise.fail(EventLoopError.cancelled)
            }
        }
    }

    public func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    public func preconditionInEventLoop(file: StaticString, line: UInt) {
        precondition(inEventLoop, "not on the relay loop's thread", file: file, line: line)
    }

    public func preconditionNotInEventLoop(file: StaticString, line: UInt) {
        precondition(!inEventLoop, "on the relay loop's thread", file: file, line: line)
    }

    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        let first = inbox.withLockedValue { inbox -> Bool in
            defer { inbox.stopping = true }
            return !inbox.stopping
        }
        if first { signalWake() }
        let finished = self.finished
        DispatchQueue.global().async {
            finished.wait()
            finished.signal()
            queue.async { callback(nil) }
        }
    }

    public func makeIterator() -> EventLoopIterator { EventLoopIterator([self]) }

    private func signalWake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    // MARK: Registrations (loop thread only)

    /// Watches `fd` for reading and writing (edge-triggered); returns the token to unregister it with.
    func register(_ fd: Int32, target: RelayTarget, tag: UInt32) throws -> UInt64 {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = targets.count
            targets.append(nil)
            tags.append(0)
            generations.append(0)
        }
        targets[slot] = target
        tags[slot] = tag
        let token = UInt64(generations[slot]) << 32 | UInt64(slot)
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        event.data.u64 = token
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else {
            let code = errno
            release(slot)
            throw RelayError.system("epoll_ctl", code)
        }
        return token
    }

    /// Forgets a registration; events already fetched for it are dropped. Closing the descriptor removes it
    /// from the epoll set; `fd` is given when it stays open.
    func unregister(_ token: UInt64, keepingOpen fd: Int32? = nil) {
        let slot = Int(token & 0xFFFF_FFFF)
        guard slot < targets.count, generations[slot] == UInt32(token >> 32) else { return }
        if let fd { epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil) }
        release(slot)
    }

    private func release(_ slot: Int) {
        targets[slot] = nil
        generations[slot] &+= 1
        freeSlots.append(slot)
    }

    /// Runs `body` at `deadline` on this loop; returns an id for `cancelTimer`.
    @discardableResult
    func addTimer(at deadline: NIODeadline, _ body: @escaping () -> Void) -> UInt64 {
        nextTimerID += 1
        timers.append((nextTimerID, deadline, body))
        return nextTimerID
    }

    /// Whether the timer was still pending.
    func cancelTimer(_ id: UInt64) -> Bool {
        guard let index = timers.firstIndex(where: { $0.id == id }) else { return false }
        timers.remove(at: index)
        return true
    }

    // MARK: Connections (loop thread only)

    /// Tracks a connection for the timeout sweep.
    func adopt(_ relay: RelayConnection) {
        relays[ObjectIdentifier(relay)] = relay
        if !sweeping {
            sweeping = true
            addTimer(at: .now() + Self.sweepInterval) { [self] in sweep() }
        }
    }

    func forget(_ relay: RelayConnection) {
        relays[ObjectIdentifier(relay)] = nil
    }

    /// Connections at their connect or idle timeout are ended; the sweep stops when no connection is left.
    private func sweep() {
        let now = Clock.nowMillis()
        for relay in Array(relays.values) { relay.checkTimeouts(nowMillis: now) }
        if relays.isEmpty {
            sweeping = false
        } else {
            addTimer(at: .now() + Self.sweepInterval) { [self] in sweep() }
        }
    }

    // MARK: The loop

    private func run() {
        let capacity = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while true {
            let (hasTasks, stopping) = inbox.withLockedValue { (!$0.tasks.isEmpty, $0.stopping) }
            if stopping { break }
            var timeout: Int32 = -1
            if hasTasks {
                timeout = 0
            } else if let next = timers.map(\.deadline).min() {
                let nanos = next.uptimeNanoseconds > NIODeadline.now().uptimeNanoseconds
                    ? next.uptimeNanoseconds - NIODeadline.now().uptimeNanoseconds : 0
                timeout = Int32(min(nanos / 1_000_000 + (nanos % 1_000_000 > 0 ? 1 : 0), 60_000))
            }
            let count = epoll_wait(epollFD, events, Int32(capacity), timeout)
            if count > 0 {
                for index in 0..<Int(count) {
                    let token = events[index].data.u64
                    if token == Self.wakeToken {
                        var value: UInt64 = 0
                        _ = Glibc.read(wakeFD, &value, 8)
                        continue
                    }
                    let slot = Int(token & 0xFFFF_FFFF)
                    guard slot < targets.count, generations[slot] == UInt32(token >> 32), let target = targets[slot] else { continue }
                    target.relayEvent(events[index].events, tag: tags[slot])
                }
            }
            runDueTimers()
            runTasks()
        }
        for relay in Array(relays.values) { relay.abort() }
        runTasks()
        Glibc.close(wakeFD)
        Glibc.close(epollFD)
        scratch.deallocate()
        finished.signal()
    }

    private func runDueTimers() {
        guard !timers.isEmpty else { return }
        let now = NIODeadline.now()
        let due = timers.filter { $0.deadline <= now }
        guard !due.isEmpty else { return }
        timers.removeAll { $0.deadline <= now }
        for timer in due.sorted(by: { $0.deadline < $1.deadline }) { timer.run() }
    }

    private func runTasks() {
        let tasks = inbox.withLockedValue { inbox -> [@Sendable () -> Void] in
            defer {
                inbox.tasks.removeAll(keepingCapacity: true)
                inbox.woken = false
            }
            return inbox.tasks
        }
        for task in tasks { task() }
    }
}

/// Relay loops, one thread each, for the TCP mode of the balancer.
public final class RelayLoopGroup: EventLoopGroup, Sendable {
    private let loops: [RelayLoop]
    private let index = ManagedAtomicCounter()

    public init(numberOfThreads: Int) throws {
        var loops: [RelayLoop] = []
        for number in 0..<max(1, numberOfThreads) {
            loops.append(try RelayLoop(name: "flotilla-relay-\(number)"))
        }
        self.loops = loops
    }

    public func next() -> any EventLoop { loops[index.next() % loops.count] }

    public func makeIterator() -> EventLoopIterator { EventLoopIterator(loops) }

    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        let group = DispatchGroup()
        for loop in loops {
            group.enter()
            loop.shutdownGracefully(queue: queue) { _ in group.leave() }
        }
        group.notify(queue: queue) { callback(nil) }
    }
}

/// A round-robin counter for `next()`.
private final class ManagedAtomicCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func next() -> Int { value.withLockedValue { $0 &+= 1; return $0 } }
}

enum RelayError: Error, CustomStringConvertible {
    case system(String, Int32)

    var description: String {
        switch self {
        case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
        }
    }
}

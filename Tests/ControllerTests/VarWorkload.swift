import AdminClient
import Foundation
import Linearizability
import PKI
import Synchronization
import Wire

/// Clients reading, writing and compare-and-setting a few variables while faults happen, every operation
/// recorded with its call and return times for the linearizability checker. Bounded in count and time; stops
/// by itself. Values are unique (`c<client>-<n>`), so a compare-and-set on a modify index is one on the value the
/// index was written with (index 0: absent).
final class VarWorkload: Sendable {
    typealias Op = Linearizability.Operation<RegisterModel.Input, RegisterModel.Output>

    struct Outcome: Sendable {
        /// Per key, every operation with a definite or unknown outcome (failed reads are left out: they did nothing).
        var histories: [String: [Op]] = [:]
        /// Writes the cluster acknowledged: key → values.
        var acknowledged: [String: [String]] = [:]
        var completed = 0
        var unknown = 0
    }

    private let outcome = Mutex(Outcome())
    private let stopped = Mutex(false)
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let origin = ContinuousClock.now

    let keys: [String]
    /// Reads answered from the connected controller's own state (`var get --stale`), not through the leader:
    /// the deliberate bug the checker must catch.
    let staleReads: Bool

    private init(keys: [String], staleReads: Bool) {
        self.keys = keys
        self.staleReads = staleReads
    }

    /// Starts `clients` clients, each on a connection of its own to `addresses`, for at most `maxOperations` each
    /// and `maxDuration`. With `staleReadsFrom`, plain reads go to that controller alone and are answered from its
    /// own state (a test of the checker: such reads are not linearizable when it falls behind).
    static func start(
        addresses: [String], credentials: Credentials, clients: Int = 3, keys: [String] = ["k0", "k1", "k2"],
        maxOperations: Int = 2_000, maxDuration: Duration = .seconds(300), staleReadsFrom: String? = nil
    ) async throws -> VarWorkload {
        let workload = VarWorkload(keys: keys, staleReads: staleReadsFrom != nil)
        let deadline = ContinuousClock.now + maxDuration
        var started: [Task<Void, Never>] = []
        for client in 0..<clients {
            let connection = try await AdminClient.connect(to: addresses, credentials: credentials)
            var reader = connection
            if let staleReadsFrom { reader = try await AdminClient.connect(to: [staleReadsFrom], credentials: credentials) }
            let readerConnection = reader
            started.append(Task {
                var random = SystemRandomNumberGenerator()
                var count = 0
                while count < maxOperations, ContinuousClock.now < deadline, !workload.stopped.withLock({ $0 }) {
                    let key = keys[Int(random.next() % UInt64(keys.count))]
                    switch random.next() % 3 {
                    case 0: await workload.read(key, client: client, readerConnection, stale: workload.staleReads)
                    case 1: await workload.write(key, value: "c\(client)-\(count)", client: client, connection)
                    default: await workload.compareAndSet(key, value: "c\(client)-\(count)", client: client, connection)
                    }
                    count += 1
                    try? await Task.sleep(for: .milliseconds(5))
                }
                await connection.close()
                if readerConnection !== connection { await readerConnection.close() }
            })
        }
        workload.tasks.withLock { $0 = started }
        return workload
    }

    /// Stops the clients (operations in flight finish or time out) and returns what they recorded.
    func stop() async -> Outcome {
        stopped.withLock { $0 = true }
        for task in tasks.withLock({ $0 }) { await task.value }
        return outcome.withLock { $0 }
    }

    var completed: Int { outcome.withLock { $0.completed } }

    /// Nanoseconds since the workload began: the history's one clock.
    private var now: UInt64 {
        let elapsed = (ContinuousClock.now - origin).components
        return UInt64(elapsed.seconds) * 1_000_000_000 + UInt64(elapsed.attoseconds / 1_000_000_000)
    }

    private func record(_ key: String, _ op: Op) {
        outcome.withLock {
            $0.histories[key, default: []].append(op)
            if op.returned == nil { $0.unknown += 1 } else { $0.completed += 1 }
            if case .write(let value?) = op.input, op.output == .ok { $0.acknowledged[key, default: []].append(value) }
            if case .compareAndSet(_, let value) = op.input, op.output == .ok { $0.acknowledged[key, default: []].append(value) }
        }
    }

    /// A linearizable read; the value and its modify index (0 when absent), or nil when the read failed.
    @discardableResult
    private func read(_ key: String, client: Int, _ connection: AdminClient, stale: Bool = false) async -> (value: String?, index: UInt64)? {
        let call = now
        do {
            let variable = try await connection.varGet(key: key, stale: stale, timeout: .seconds(5))
            let value = String(decoding: variable.value, as: UTF8.self)
            record(key, Op(client: client, call: call, returned: now, input: .read, output: .value(value)))
            return (value, variable.modifyIndex)
        } catch let error as RPCError where error.code == .notFound {
            record(key, Op(client: client, call: call, returned: now, input: .read, output: .value(nil)))
            return (nil, 0)
        } catch {
            return nil  // a failed read did nothing
        }
    }

    private func write(_ key: String, value: String, client: Int, _ connection: AdminClient) async {
        let call = now
        do {
            _ = try await connection.varPut(key: key, value: Data(value.utf8), timeout: .seconds(5))
            record(key, Op(client: client, call: call, returned: now, input: .write(value), output: .ok))
        } catch {
            // Not known to have failed: it may have been committed, now or later.
            record(key, Op(client: client, call: call, returned: nil, input: .write(value), output: nil))
        }
    }

    /// Reads the key, then sets it from what it read.
    private func compareAndSet(_ key: String, value: String, client: Int, _ connection: AdminClient) async {
        guard let seen = await read(key, client: client, connection) else { return }
        let call = now
        let input = RegisterModel.Input.compareAndSet(expected: seen.value, new: value)
        do {
            _ = try await connection.varPut(key: key, value: Data(value.utf8), cas: seen.index, timeout: .seconds(5))
            record(key, Op(client: client, call: call, returned: now, input: input, output: .ok))
        } catch let error as RPCError where error.code == .failedPrecondition {
            record(key, Op(client: client, call: call, returned: now, input: input, output: .failed))
        } catch {
            record(key, Op(client: client, call: call, returned: nil, input: input, output: nil))
        }
    }
}

extension VarWorkload.Outcome {
    /// Every key's history checked; the verdicts, and operations checked in all.
    func check() -> (verdicts: [String: LinearizabilityChecker<RegisterModel>.Verdict], operations: Int) {
        let checker = LinearizabilityChecker(model: RegisterModel())
        var verdicts: [String: LinearizabilityChecker<RegisterModel>.Verdict] = [:]
        for (key, history) in histories { verdicts[key] = checker.check(history) }
        return (verdicts, histories.values.map(\.count).reduce(0, +))
    }
}

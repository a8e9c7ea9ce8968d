import ClusterModel
import ClusterStore
@testable import Controller
import Raft
import Synchronization
import TestSupport
import Testing

/// The watch stream the leader's control loops read: every applied change, in order; a reset when the state is
/// replaced or a watcher falls behind.
@Suite("Store watch")
struct StoreWatchTests {
    @Test("a watcher sees each applied command's changes in apply order, and skipped entries produce nothing")
    func changesInOrder() async throws {
        let store = StoreApplication()
        let subscription = store.watch.subscribe()
        var iterator = subscription.makeAsyncIterator()
        _ = try store.apply(index: 1, command: ClusterCommands.varPut(key: "a", value: [1]))
        store.skip(index: 2)
        _ = try store.apply(index: 3, command: ClusterCommands.varPut(key: "b", value: [2]))
        _ = try store.apply(index: 4, command: ClusterCommands.varDelete(key: "a"))
        #expect(await iterator.next() == .changes([StoreChange(table: .variables, key: "a", kind: .put, index: 1)]))
        #expect(await iterator.next() == .changes([StoreChange(table: .variables, key: "b", kind: .put, index: 3)]))
        #expect(await iterator.next() == .changes([StoreChange(table: .variables, key: "a", kind: .delete, index: 4)]))
    }

    @Test("installing a snapshot tells every watcher to re-read the state")
    func snapshotResets() async throws {
        let source = StoreApplication()
        _ = try source.apply(index: 1, command: ClusterCommands.varPut(key: "k", value: [9]))
        let snapshot = Snapshot(
            metadata: SnapshotMetadata(index: 1, term: 1, configuration: RaftConfiguration(voters: [NodeID("c1")])),
            data: source.snapshot())
        let store = StoreApplication()
        var iterator = store.watch.subscribe().makeAsyncIterator()
        try store.restore(snapshot)
        #expect(await iterator.next() == .reset)
        #expect(store.read { $0.variable("k")?.value } == [9])
    }

    @Test("a watcher that falls behind gets one reset in place of its unbounded backlog, then the changes after it")
    func slowWatcherResets() async throws {
        let watch = StoreWatch()
        var slow = watch.subscribe().makeAsyncIterator()
        let count = StoreWatch.queueLimit + 5
        for index in 1...count {
            watch.publish(.changes([StoreChange(table: .variables, key: "k", kind: .put, index: UInt64(index))]))
        }
        #expect(await slow.next() == .reset)
        // The queue overflowed at the (limit + 1)th change; what came after it is still delivered, in order.
        for index in (StoreWatch.queueLimit + 2)...count {
            #expect(await slow.next() == .changes([StoreChange(table: .variables, key: "k", kind: .put, index: UInt64(index))]))
        }
    }

    @Test("a waiting watcher is woken by the next change, ends when its task is cancelled, and is then forgotten")
    func waitingAndCancellation() async throws {
        let watch = StoreWatch()
        let received = Mutex<[StoreEvent]>([])
        let watcher = Task {
            for await event in watch.subscribe() { received.withLock { $0.append(event) } }
        }
        #expect(try await eventually { watch.watcherCount == 1 })
        let change = StoreChange(table: .controllers, key: "c2", kind: .put, index: 7)
        watch.publish(.changes([change]))
        #expect(try await eventually { received.withLock { $0.count } == 1 })
        watcher.cancel()
        await watcher.value
        #expect(received.withLock { $0 } == [.changes([change])])
        #expect(try await eventually { watch.watcherCount == 0 })
    }
}

@Suite("Mailbox")
struct MailboxTests {
    @Test("a reader that falls behind finds its backlog replaced by what overflow makes; a closed mailbox ends its reader and refuses more")
    func overflowAndClose() async {
        let mailbox = Mailbox<Int>(limit: 3)
        for value in 1...3 { #expect(mailbox.push(value, overflow: { -1 })) }
        #expect(mailbox.backlog == 3)
        mailbox.push(4, overflow: { -1 })
        #expect(mailbox.backlog == 1)
        #expect(await mailbox.next() == -1)
        mailbox.push(5, overflow: { -1 })
        mailbox.replaceAll(with: 9)
        #expect(await mailbox.next() == 9)
        mailbox.close()
        #expect(await mailbox.next() == nil)
        #expect(!mailbox.push(6, overflow: { -1 }))
    }
}

import ClusterStore
import Messages
import Synchronization
import Transport
import Wire

/// Serves `Admin/Events`: the store's event history, filtered, and with `follow` each new event as it applies.
///
/// Every controller derives the same history, but reads are linearizable like the other admin reads, so only
/// the leader answers (followers say NOT_LEADER with its address and the client goes there). A follower of the
/// stream holds no events of its own: it keeps the id of the last one it sent and reads the store after it
/// when the store's watch says something applied, so its memory is bounded by one batch.
final class EventService: Sendable {
    let raft: ControllerRaft
    /// Follow streams open at once; more are refused with RESOURCE_EXHAUSTED.
    let maxFollowers: Int
    /// Events per response.
    static let batchSize = 256

    private let followers = Mutex(0)

    init(raft: ControllerRaft, maxFollowers: Int = 64) {
        self.raft = raft
        self.maxFollowers = maxFollowers
    }

    func register(into router: inout RPCRouter) {
        router.register(Methods.events) { request, writer, _ in try await self.events(request, writer: writer) }
    }

    func events(_ request: Flotilla_V1_EventsRequest, writer: ResponseWriter<Flotilla_V1_EventsResponse>) async throws {
        try await raft.linearizable()
        guard request.follow else {
            _ = try await send(after: request.sinceID, request, writer: writer)
            return
        }
        let admitted = followers.withLock { count in
            guard count < maxFollowers else { return false }
            count += 1
            return true
        }
        guard admitted else {
            throw RPCError(.resourceExhausted, "this controller already streams events to \(maxFollowers) followers; try again when one ends")
        }
        defer { followers.withLock { $0 -= 1 } }
        // Subscribed before the first read, so an event applied in between is read at the next wake-up.
        let watch = raft.store.watch.subscribe()
        var cursor = try await send(after: request.sinceID, request, writer: writer)
        for await change in watch {
            if case .changes(let rows) = change, !rows.contains(where: { $0.table == .events }) { continue }
            cursor = try await send(after: cursor, request, writer: writer)
        }
    }

    /// Sends the matching events after `id`, in batches; returns the id of the last event looked at. The first
    /// response says how many were missed (dropped from the history before they could be read: a `since_id`
    /// older than the history, or a follower that fell more than the whole history behind).
    private func send(
        after id: UInt64, _ request: Flotilla_V1_EventsRequest, writer: ResponseWriter<Flotilla_V1_EventsResponse>
    ) async throws -> UInt64 {
        let filter = EventFilter(request)
        let (events, last, missed) = raft.store.read { state in
            (state.events(after: id).filter(filter.matches), state.lastEventID, state.eventsDropped(after: id))
        }
        var position = 0
        repeat {
            var response = Flotilla_V1_EventsResponse()
            response.events = Array(events[position..<min(position + Self.batchSize, events.count)])
            if position == 0 && id > 0 { response.missed = missed }
            if !response.events.isEmpty || response.missed > 0 { try await writer.write(response) }
            position += Self.batchSize
        } while position < events.count
        return max(id, last)
    }
}

import ClusterModel
import Foundation
import ClusterStore
import Logging
import Raft
import RaftRuntime
import Transport
import Wire

/// Controller membership: the Join call, and the leader's housekeeping that keeps the address book current
/// and promotes learners once they have caught up (Raft dissertation §4.2.1).
struct MembershipService: Sendable {
    let raft: ControllerRaft
    let peers: RaftPeers
    let advertiseAddress: String
    let authority: ClusterAuthority
    let logger: Logger

    func register(into router: inout RPCRouter) {
        router.register(Methods.controllerJoin) { request, context in
            try await join(request, caller: context.peer)
        }
    }

    func join(_ request: Flotilla_V1_JoinRequest, caller: PeerIdentity) async throws -> Flotilla_V1_JoinResponse {
        let id = NodeID(request.id)
        guard id == caller.nodeID else {
            throw RPCError(.permissionDenied, "a controller may only join as itself: certificate says \(caller.nodeID), request says \(id)")
        }
        guard HostPort.parse(request.address) != nil else {
            throw RPCError(.invalidArgument, "join address '\(request.address)' is not host:port")
        }
        let status = await raft.driver.status
        guard status.role == .leader else { throw raft.translate(RaftDriverError.notLeader(leader: status.leader)) }
        let record = ControllerRecord(id: id, address: request.address, isVoter: status.configuration.voters.contains(id))
        if raft.store.read({ $0.controller(id) }) != record {
            _ = try await raft.propose(ClusterCommands.controllerUpsert(record))
        }
        if !status.configuration.members.contains(id) {
            do {
                try await raft.driver.proposeConfigurationChange(.addLearner(id))
            } catch {
                throw raft.translate(error)
            }
            logger.info("controller joined as a learner", metadata: ["controller.id": "\(id)", "address": "\(request.address)"])
        }
        var response = Flotilla_V1_JoinResponse()
        response.voters = status.configuration.voters.map(\.rawValue).sorted()
        return response
    }

    /// Runs on every controller; acts only while this one leads.
    func maintain() async {
        // Address-book entries of controllers that are not members (removed, or from before a restore),
        // and since when: removed after a grace period, so a joiner between its two steps is left alone.
        var orphanedSince: [NodeID: ContinuousClock.Instant] = [:]
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            let status = await raft.driver.status
            guard status.role == .leader, status.commitIndex == status.lastIndex || status.commitIndex > 0 else { continue }
            // This controller's own entry in the address book (the founder writes its own; others come via Join).
            let own = ControllerRecord(id: raft.id, address: advertiseAddress, isVoter: status.configuration.voters.contains(raft.id))
            if raft.store.read({ $0.controller(raft.id) }) != own {
                _ = try? await raft.propose(ClusterCommands.controllerUpsert(own))
                continue
            }
            // The founder replicates the cluster CA once, so that any later leader can sign joins.
            if raft.store.read({ $0.ca }) == nil, let record = try? authority.localRecord() {
                _ = try? await raft.propose(ClusterCommands.clusterCASet(record))
                continue
            }
            // A member that came back on another address announced it on its Raft stream: record it.
            for (member, address) in peers.announcedAddresses.sorted(by: { $0.key < $1.key })
            where status.configuration.members.contains(member) {
                guard let record = raft.store.read({ $0.controller(member) }), record.address != address else { continue }
                _ = try? await raft.propose(ClusterCommands.controllerUpsert(
                    ControllerRecord(id: member, address: address, isVoter: record.isVoter)))
            }
            let records = raft.store.read { $0.controllers }
            for record in records where !status.configuration.members.contains(record.id) && record.id != raft.id {
                let since = orphanedSince[record.id, default: .now]
                orphanedSince[record.id] = since
                if ContinuousClock.now - since > .seconds(10) {
                    // A former voter was removed (possibly while it led): revoke it too. A learner's record may
                    // be a joiner between its two steps that gave up; it is only forgotten.
                    if record.isVoter {
                        let now = UInt64(Date().timeIntervalSince1970 * 1000)
                        _ = try? await raft.propose(ClusterCommands.nodeRemove(id: record.id, nowMs: now))
                    }
                    _ = try? await raft.propose(ClusterCommands.controllerRemove(id: record.id))
                    orphanedSince[record.id] = nil
                }
            }
            // Promote a learner that has caught up with the commit index.
            for learner in status.configuration.learners.sorted() {
                guard let match = status.matchIndexes[learner], match >= status.commitIndex else { continue }
                do {
                    try await raft.driver.proposeConfigurationChange(.promote(learner))
                    if let record = raft.store.read({ $0.controller(learner) }) {
                        _ = try? await raft.propose(ClusterCommands.controllerUpsert(
                            ControllerRecord(id: learner, address: record.address, isVoter: true)))
                    }
                    logger.info("learner promoted to voter", metadata: ["controller.id": "\(learner)"])
                } catch {
                    logger.debug("promotion deferred", metadata: ["controller.id": "\(learner)", "error": "\(error)"])
                }
                break  // one change at a time
            }
        }
    }
}

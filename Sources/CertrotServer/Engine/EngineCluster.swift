import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// The engine's part in a cluster of replicas: what ``ClusterRole`` decides, carried out.
extension Engine {
    /// Inbound subscriptions: shared among the replicas of a cluster, each message to one of them.
    /// Kinds of credential add the topics they take messages on (``CredentialKind/inboundFilters``).
    var inboundFilters: [String] {
        let own = kinds.flatMap(\.inboundFilters)
        guard let role else { return [Topics.inventoryFilter, Topics.ackFilter] + own }
        return role.inboundFilters + role.shared(own)
    }

    func subscribe(_ filters: [String]) {
        guard connected else { return }
        do {
            try client?.subscribe(filters, qos: 1)
        } catch {
            logger.error("subscribe failed", metadata: ["error": "\(error)", "filters": "\(filters)"])
        }
    }

    func unsubscribe(_ filters: [String]) {
        guard connected else { return }
        do {
            try client?.unsubscribe(filters)
        } catch {
            logger.error("unsubscribe failed", metadata: ["error": "\(error)", "filters": "\(filters)"])
        }
    }

    /// Once a second: this replica is alive (in a transaction of its own, so that a long batch cannot make it
    /// look dead), and is it the leader? (A session-level lock in PostgreSQL; free when its holder dies.)
    func checkLeadership() {
        guard let cluster, role?.leadershipCheckDue(now: monotonic()) == true else { return }
        do {
            try store.write { tx in try tx.heartbeat(replica: cluster.replica, at: clock()) }
        } catch {
            logger.error("heartbeat failed", metadata: ["error": "\(String(reflecting: error))"])
        }
        leadership((try? store.holdLeadership()) ?? false)
    }

    /// What the store said of the leadership, or a fenced transaction showed: acted on when it changed.
    func leadership(_ leading: Bool) {
        guard let cluster, let change = role?.leadership(leading) else { return }
        observability?.leader(leading)
        switch change {
        case .leading:
            logger.notice("this replica leads the cluster", metadata: ["replica": "\(cluster.replica)"])
            rpc?.answer(true)
        case .following:
            logger.notice("this replica follows", metadata: ["replica": "\(cluster.replica)"])
            rpc?.answer(false)
        }
    }

    /// A write transaction of the leader's: fenced in a cluster (``StoreTransaction/fence()``), so that it commits
    /// nothing once another replica has taken the leadership; when it was fenced off, this replica follows from
    /// now on and the error is rethrown.
    func leaderWrite<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        do {
            return try store.write { tx in
                if cluster != nil { try tx.fence() }
                return try body(tx)
            }
        } catch let lost as LeadershipLost {
            fencedOff(lost)
            throw lost
        }
    }

    /// A fenced transaction failed: another replica leads.
    func fencedOff(_ lost: LeadershipLost) {
        observability?.fenced()
        logger.warning("a leader's transaction was fenced off; following", metadata: ["reason": "\(lost)"])
        leadership(false)
    }

    /// The leader takes over from replicas that stopped (their undelivered
    /// bundles), and after taking the leadership or a replica's death catches up with retained inventories: a
    /// broker delivers no retained message through a shared subscription (mosquitto does, others do not), and
    /// a dead replica's unhandled messages are gone with its clean session.
    func clusterTick(
        _ cluster: DaemonSettings.ClusterSettings, tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws {
        let now = clock()
        guard isLeader else { return }
        var catchUp = false
        if role?.takeOver() == true {
            try reloadCampaigns(tx: tx)
            catchUp = true
        }
        if role?.staleCheckDue(now: now) == true {
            for replica in try tx.replicas(seenBefore: now - cluster.deadAfter) where replica != cluster.replica {
                logger.warning(
                    "replica stopped reporting; taking over its undelivered bundles",
                    metadata: ["replica": "\(replica)"])
                try resumeUndelivered(issuedBy: replica, .takeover, tx: tx, outbox: &outbox)
                try tx.forgetReplica(replica)
                catchUp = true
            }
        }
        switch role?.catchUp(now: monotonic(), triggered: catchUp) {
        case .subscribe: subscribe([Topics.inventoryFilter])
        case .unsubscribe: unsubscribe([Topics.inventoryFilter])
        case nil: break
        }
    }

    /// In a cluster every replica signs and sends bundles: the leader admits campaign members (their rotations
    /// then await a bundle), and each replica claims a share of the awaiting rotations on every tick, as many as
    /// its own outbound queue has room for (the admission back-pressure of one node, per replica).
    func claimOutboundWork(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let room = min(100, max(0, 2 * maxInflight - queuedPublishes - outbox.count))
        guard room > 0 else { return }
        let claimed = try tx.claimAwaitingBundle(limit: room, holding: registry.held)
        try tx.prefetch(devices: claimed)
        for id in claimed {
            guard let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
    }

    /// A follower's view of the campaigns the leader runs.
    func reloadCampaigns(tx: any StoreTransaction) throws {
        for campaign in try tx.campaigns() where campaigns[campaign.id] != campaign { remember(campaign) }
    }

    static func newJTI() -> String {
        var generator = SystemRandomNumberGenerator()
        return Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }
}

import CertrotCore
import PostgresNIO

/// Several replicas on one database (docs/scaling.md): device locks, shared outbound work, the leader's fence, heartbeats.
extension PostgresTransaction {
    func lockDevice(_ device: String) throws {
        // A transaction-scoped advisory lock: released at COMMIT or ROLLBACK, also for a device with no row yet.
        // Not waited for: the reads that follow run after it, so they see the device only once it is held.
        guard held[DeviceKey(device)] == nil else { return }  // held already
        send("SELECT pg_advisory_xact_lock(hashtextextended(\("device:" + device), 0))")
    }

    func claimAwaitingBundle(limit: Int, holding: [String]) throws -> [String] {
        // Rows another replica's transaction holds are skipped; of the devices claimed, those whose lock another
        // transaction holds (it is handling the device's ack or inventory) are skipped too, never waited for:
        // waiting on a device lock while holding rotation rows could close a cycle with that transaction.
        try query(
            """
            WITH claimed AS (
                SELECT device FROM rotations
                WHERE state = 'pending' AND jti IS NULL
                    AND NOT EXISTS (SELECT 1 FROM unnest(\(holding)::text[]) AS h(prefix) WHERE starts_with(target, h.prefix))
                ORDER BY updated_at, device LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
            )
            SELECT device FROM (SELECT DISTINCT device FROM claimed) AS d
            WHERE pg_try_advisory_xact_lock(hashtextextended('device:' || device, 0))
            ORDER BY device
            """
        ).map { try $0["device"].decode(String.self) }
    }

    /// `certrot_fence` takes the leadership row FOR SHARE, so a replica taking the leadership (which bumps the
    /// epoch) waits until this transaction ends, and fails the transaction (SQLSTATE CR001) when the epoch has
    /// moved. Sent without waiting: its failure surfaces at the next wait, at the latest at COMMIT.
    func fence() throws {
        guard let epoch else { throw LeadershipLost("this replica does not hold the leadership") }
        send("SELECT certrot_fence(\(epoch))")
    }

    func heartbeat(replica: String, at: Int64) throws {
        try execute(
            """
            INSERT INTO replicas (id, seen_at) VALUES (\(replica), \(at))
            ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at
            """)
    }

    func replicas(seenBefore before: Int64) throws -> [String] {
        try query("SELECT id FROM replicas WHERE seen_at < \(before) ORDER BY id").map {
            try $0["id"].decode(String.self)
        }
    }

    func forgetReplica(_ replica: String) throws {
        try execute("DELETE FROM replicas WHERE id = \(replica)")
    }
}

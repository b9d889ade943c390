import CertrotCore
import PostgresNIO

/// The audit log (table `audit`, migration v7). Replicas append to one chain: the head is read under a
/// transaction-scoped advisory lock, so their appends follow one another.
extension PostgresTransaction {
    /// An arbitrary constant naming the audit log's lock among the database's advisory locks (…7401 is the
    /// migration lock, …7402 the cluster's leadership, held for a leader's whole session).
    static let auditLock: Int64 = 0x6365_7274_726F_7403

    func lastAuditRecord() throws -> AuditRecord? {
        if let auditHead { return auditHead }
        send("SELECT pg_advisory_xact_lock(\(Self.auditLock))")
        let head = try rows("SELECT * FROM audit ORDER BY seq DESC LIMIT 1").first.map(Self.audit(from:))
        auditHead = .some(head)
        return head
    }

    /// Kept with the other writes; the head is known (the caller read it, under the lock, in this transaction).
    func appendAudit(_ r: AuditRecord) throws {
        if auditHead == nil { _ = try lastAuditRecord() }
        pending.audit.append(r)
        auditHead = .some(r)
    }

    func auditRecords(after: Int64, limit: Int, since: Int64?, device: String?) throws -> [AuditRecord] {
        try query(
            """
            SELECT * FROM audit WHERE seq > \(after) AND (\(since)::BIGINT IS NULL OR at >= \(since))
                AND (\(device)::TEXT IS NULL OR device = \(device)) ORDER BY seq LIMIT \(limit)
            """
        ).map(Self.audit(from:))
    }

    func auditPruneAnchor(before: Int64, within: Int) throws -> AuditRecord? {
        try query(
            """
            SELECT audit.* FROM audit, (SELECT MIN(seq) AS first FROM audit) AS head
                WHERE seq > head.first AND seq <= head.first + \(Int64(within)) AND kind = 'checkpoint'
                    AND at < \(before)
                ORDER BY seq DESC LIMIT 1
            """
        ).first.map(Self.audit(from:))
    }

    func deleteAudit(before seq: Int64) throws -> Int {
        try query("DELETE FROM audit WHERE seq < \(seq) RETURNING seq").count
    }

    static func audit(from row: PostgresRandomAccessRow) throws -> AuditRecord {
        AuditRecord(
            seq: try row["seq"].decode(Int64.self), at: try row["at"].decode(Int64.self),
            kind: AuditRecord.Kind(rawValue: try row["kind"].decode(String.self)) ?? .operatorRequest,
            device: try row["device"].decode(String?.self), subject: try row["subject"].decode(String?.self),
            body: try row["body"].decode(String.self), prev: try row["prev"].decode(String.self),
            hash: try row["hash"].decode(String.self), signature: try row["signature"].decode(String?.self))
    }
}

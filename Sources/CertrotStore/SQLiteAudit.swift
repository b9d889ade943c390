import CertrotCore
import GRDB

/// The audit log (table `audit`, migration v7).
extension SQLiteTransaction {
    static let auditColumns = "seq, at, kind, device, subject, body, prev, hash, signature"

    func lastAuditRecord() throws -> AuditRecord? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(Self.auditColumns) FROM audit ORDER BY seq DESC LIMIT 1")
        ).map(Self.audit(from:))
    }

    func appendAudit(_ r: AuditRecord) throws {
        try db.cachedStatement(
            sql: "INSERT INTO audit (\(Self.auditColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [
            r.seq, r.at, r.kind.rawValue, r.device, r.subject, r.body, r.prev, r.hash, r.signature,
        ])
    }

    func auditRecords(after: Int64, limit: Int, since: Int64?, device: String?) throws -> [AuditRecord] {
        try Row.fetchAll(
            db.cachedStatement(
                sql: """
                    SELECT \(Self.auditColumns) FROM audit WHERE seq > ? AND (? IS NULL OR at >= ?)
                        AND (? IS NULL OR device = ?) ORDER BY seq LIMIT ?
                    """),
            arguments: [after, since, since, device, device, limit]
        ).map(Self.audit(from:))
    }

    func auditPruneAnchor(before: Int64, within: Int) throws -> AuditRecord? {
        try Row.fetchOne(
            db.cachedStatement(
                sql: """
                    SELECT \(Self.auditColumns) FROM audit, (SELECT MIN(seq) AS first FROM audit)
                        WHERE seq > first AND seq <= first + ? AND kind = 'checkpoint' AND at < ?
                        ORDER BY seq DESC LIMIT 1
                    """),
            arguments: [within, before]
        ).map(Self.audit(from:))
    }

    func deleteAudit(before seq: Int64) throws -> Int {
        try db.cachedStatement(sql: "DELETE FROM audit WHERE seq < ?").execute(arguments: [seq])
        return db.changesCount
    }

    static func audit(from row: Row) -> AuditRecord {
        AuditRecord(
            seq: row[0], at: row[1], kind: AuditRecord.Kind(rawValue: row[2]) ?? .operatorRequest, device: row[3],
            subject: row[4], body: row[5], prev: row[6], hash: row[7], signature: row[8])
    }
}

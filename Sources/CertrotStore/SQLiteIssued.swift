import CertrotCore
import GRDB

/// Client certificates certrot issued (table `issued_certs`, migration v6), and identity keys learned on first use
/// (table `learned_identities`, migration v9).
extension SQLiteTransaction {
    static let issuedColumns =
        "issuer, serial, device, policy, tag, keygen_jti, sha256, pem, not_before, not_after, issued_at, state, revoked_at"

    func insertIssued(_ c: IssuedCertificate) throws {
        try db.cachedStatement(
            sql: "INSERT INTO issued_certs (\(Self.issuedColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [
            c.issuer, c.serial, c.device, c.policy, c.tag, c.keygenJTI, c.sha256, c.pem, c.notBefore, c.notAfter,
            c.issuedAt, c.state.rawValue, c.revokedAt,
        ])
    }

    func saveIssued(_ c: IssuedCertificate) throws {
        try db.cachedStatement(
            sql: "UPDATE issued_certs SET state = ?, revoked_at = ? WHERE issuer = ? AND serial = ?"
        ).execute(arguments: [c.state.rawValue, c.revokedAt, c.issuer, c.serial])
    }

    func issued(keygenJTI: String) throws -> IssuedCertificate? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(Self.issuedColumns) FROM issued_certs WHERE keygen_jti = ?"),
            arguments: [keygenJTI]
        ).map(Self.issued(from:))
    }

    func issued(device: String) throws -> [IssuedCertificate] {
        try Row.fetchAll(
            db.cachedStatement(
                sql: "SELECT \(Self.issuedColumns) FROM issued_certs WHERE device = ? ORDER BY issued_at, serial"),
            arguments: [device]
        ).map(Self.issued(from:))
    }

    func revoked(issuer: String) throws -> [IssuedCertificate] {
        try Row.fetchAll(
            db.cachedStatement(
                sql:
                    "SELECT \(Self.issuedColumns) FROM issued_certs WHERE issuer = ? AND state = 'revoked' ORDER BY serial"
            ),
            arguments: [issuer]
        ).map(Self.issued(from:))
    }

    func issuedCounts() throws -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for row in try Row.fetchAll(
            db.cachedStatement(sql: "SELECT issuer, state, COUNT(*) FROM issued_certs GROUP BY issuer, state"))
        {
            counts[row[0] as String, default: [:]][row[1] as String] = row[2] as Int
        }
        return counts
    }

    func issuedCount(since: Int64) throws -> Int {
        try Int.fetchOne(
            db.cachedStatement(sql: "SELECT COUNT(*) FROM issued_certs WHERE issued_at >= ?"), arguments: [since]) ?? 0
    }

    func oldestUnexpiredIssuance(now: Int64) throws -> Int64? {
        try Int64.fetchOne(
            db.cachedStatement(sql: "SELECT MIN(issued_at) FROM issued_certs WHERE not_after > ?"), arguments: [now])
    }

    func pruneIssued(expiredBefore before: Int64, limit: Int) throws -> Int {
        try db.cachedStatement(
            sql: """
                DELETE FROM issued_certs WHERE rowid IN
                    (SELECT rowid FROM issued_certs WHERE not_after < ? AND state != 'active' LIMIT ?)
                """
        ).execute(arguments: [before, limit])
        return db.changesCount
    }

    func learnedIdentity(device: String) throws -> LearnedIdentity? {
        try Row.fetchOne(
            db.cachedStatement(
                sql: "SELECT uuid, candidates, first_seen_at, pinned_at FROM learned_identities WHERE device = ?"),
            arguments: [device]
        ).map { row in
            LearnedIdentity(
                device: device, uuid: Hex.decode(row[0] as String) ?? [],
                candidates: (row[1] as String).split(separator: ",").map(String.init), firstSeenAt: row[2],
                pinnedAt: row[3])
        }
    }

    func saveLearnedIdentity(_ identity: LearnedIdentity) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO learned_identities (device, uuid, candidates, first_seen_at, pinned_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (device) DO UPDATE SET uuid = excluded.uuid, candidates = excluded.candidates,
                    first_seen_at = excluded.first_seen_at, pinned_at = excluded.pinned_at
                """
        ).execute(arguments: [
            identity.device, Hex.encode(identity.uuid), identity.candidates.joined(separator: ","),
            identity.firstSeenAt, identity.pinnedAt,
        ])
    }

    static func issued(from row: Row) -> IssuedCertificate {
        IssuedCertificate(
            issuer: row[0], serial: row[1], device: row[2], policy: row[3], tag: row[4], keygenJTI: row[5],
            sha256: row[6], pem: row[7], notBefore: row[8], notAfter: row[9], issuedAt: row[10],
            state: IssuedCertificate.State(rawValue: row[11]) ?? .issued, revokedAt: row[12])
    }
}

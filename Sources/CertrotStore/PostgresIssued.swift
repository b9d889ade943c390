import CertrotCore
import PostgresNIO

/// Client certificates certrot issued (table `issued_certs`, migration v6), and identity keys learned on first use
/// (table `learned_identities`, migration v9).
extension PostgresTransaction {
    func insertIssued(_ c: IssuedCertificate) throws {
        try execute(
            """
            INSERT INTO issued_certs (issuer, serial, device, policy, tag, keygen_jti, sha256, pem, not_before,
                not_after, issued_at, state, revoked_at)
            VALUES (\(c.issuer), \(c.serial), \(c.device), \(c.policy), \(c.tag), \(c.keygenJTI), \(c.sha256),
                \(c.pem), \(c.notBefore), \(c.notAfter), \(c.issuedAt), \(c.state.rawValue), \(c.revokedAt))
            """)
    }

    func saveIssued(_ c: IssuedCertificate) throws {
        try execute(
            """
            UPDATE issued_certs SET state = \(c.state.rawValue), revoked_at = \(c.revokedAt)
            WHERE issuer = \(c.issuer) AND serial = \(c.serial)
            """)
    }

    func issued(keygenJTI: String) throws -> IssuedCertificate? {
        try query("SELECT * FROM issued_certs WHERE keygen_jti = \(keygenJTI)").first.map(Self.issued(from:))
    }

    func issued(device: String) throws -> [IssuedCertificate] {
        try query("SELECT * FROM issued_certs WHERE device = \(device) ORDER BY issued_at, serial").map(
            Self.issued(from:))
    }

    func revoked(issuer: String) throws -> [IssuedCertificate] {
        try query("SELECT * FROM issued_certs WHERE issuer = \(issuer) AND state = 'revoked' ORDER BY serial").map(
            Self.issued(from:))
    }

    func issuedCounts() throws -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for row in try query("SELECT issuer, state, COUNT(*) AS n FROM issued_certs GROUP BY issuer, state") {
            counts[try row["issuer"].decode(String.self), default: [:]][try row["state"].decode(String.self)] =
                try row["n"].decode(Int.self)
        }
        return counts
    }

    func issuedCount(since: Int64) throws -> Int {
        try query("SELECT COUNT(*) AS n FROM issued_certs WHERE issued_at >= \(since)").first?["n"].decode(Int.self)
            ?? 0
    }

    func oldestUnexpiredIssuance(now: Int64) throws -> Int64? {
        try query("SELECT MIN(issued_at) AS oldest FROM issued_certs WHERE not_after > \(now)").first?["oldest"]
            .decode(Int64?.self)
    }

    func pruneIssued(expiredBefore before: Int64, limit: Int) throws -> Int {
        try query(
            """
            DELETE FROM issued_certs WHERE (issuer, serial) IN (SELECT issuer, serial FROM issued_certs
                WHERE not_after < \(before) AND state != 'active' LIMIT \(limit))
            RETURNING serial
            """
        ).count
    }

    func learnedIdentity(device: String) throws -> LearnedIdentity? {
        try query("SELECT * FROM learned_identities WHERE device = \(device)").first.map { row in
            LearnedIdentity(
                device: device, uuid: Hex.decode(try row["uuid"].decode(String.self)) ?? [],
                candidates: try row["candidates"].decode(String.self).split(separator: ",").map(String.init),
                firstSeenAt: try row["first_seen_at"].decode(Int64.self),
                pinnedAt: try row["pinned_at"].decode(Int64?.self))
        }
    }

    func saveLearnedIdentity(_ identity: LearnedIdentity) throws {
        let uuid = Hex.encode(identity.uuid)
        let candidates = identity.candidates.joined(separator: ",")
        try execute(
            """
            INSERT INTO learned_identities (device, uuid, candidates, first_seen_at, pinned_at)
            VALUES (\(identity.device), \(uuid), \(candidates), \(identity.firstSeenAt), \(identity.pinnedAt))
            ON CONFLICT (device) DO UPDATE SET uuid = excluded.uuid, candidates = excluded.candidates,
                first_seen_at = excluded.first_seen_at, pinned_at = excluded.pinned_at
            """)
    }

    static func issued(from row: PostgresRandomAccessRow) throws -> IssuedCertificate {
        IssuedCertificate(
            issuer: try row["issuer"].decode(String.self), serial: try row["serial"].decode(String.self),
            device: try row["device"].decode(String.self), policy: try row["policy"].decode(String.self),
            tag: try row["tag"].decode(Int64.self), keygenJTI: try row["keygen_jti"].decode(String.self),
            sha256: try row["sha256"].decode(String.self), pem: try row["pem"].decode(String.self),
            notBefore: try row["not_before"].decode(Int64.self), notAfter: try row["not_after"].decode(Int64.self),
            issuedAt: try row["issued_at"].decode(Int64.self),
            state: IssuedCertificate.State(rawValue: try row["state"].decode(String.self)) ?? .issued,
            revokedAt: try row["revoked_at"].decode(Int64?.self))
    }
}

import CertrotCore
import Foundation
import GRDB

/// Every statement is prepared once per connection and kept (GRDB's statement cache): preparing one costs more than
/// running it (the parser, and GRDB's authorizer working out the tables it touches). Rows are read by column
/// index, in the order of the `…Columns` lists, not by name (a name lookup lower-cases and hashes the name).
struct SQLiteTransaction: StoreTransaction {
    let db: Database
    let inventories: StoredInventories

    static let deviceColumns = "id, first_seen, last_seen, inventory, issued_seq"
    static let rotationColumns = RotationSQL.columns
    static let memberColumns = "campaign, device, wave, state, settled, reason, updated_at"

    private func rows(_ sql: String, _ arguments: StatementArguments = []) throws -> [Row] {
        try Row.fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }

    private func row(_ sql: String, _ arguments: StatementArguments = []) throws -> Row? {
        try Row.fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }

    private func count(_ sql: String, _ arguments: StatementArguments = []) throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: sql), arguments: arguments) ?? 0
    }

    private func run(_ sql: String, _ arguments: StatementArguments) throws {
        try db.cachedStatement(sql: sql).execute(arguments: arguments)
    }

    func device(_ id: String) throws -> DeviceRecord? {
        try row("SELECT \(Self.deviceColumns) FROM devices WHERE id = ?", [id]).map(device(from:))
    }

    func saveDevice(_ device: DeviceRecord) throws {
        try run(
            """
            INSERT INTO devices (id, first_seen, last_seen, inventory, keys, issued_seq) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen, inventory = excluded.inventory,
                keys = excluded.keys, issued_seq = excluded.issued_seq
            """,
            [
                device.id, device.firstSeen, device.lastSeen,
                device.inventory.map { Data(inventories.encode(device: device.id, $0)) },
                device.inventory?.keys.map { "," + $0.joined(separator: ",") + "," }, device.issuedSeq,
            ])
    }

    func rotations(device: String) throws -> [Rotation] {
        try rows("SELECT \(Self.rotationColumns) FROM rotations WHERE device = ? ORDER BY target", [device])
            .map(Self.rotation(from:))
    }

    func rotations(jti: String) throws -> [Rotation] {
        try rows("SELECT \(Self.rotationColumns) FROM rotations WHERE jti = ?", [jti]).map(Self.rotation(from:))
    }

    func saveRotation(_ r: Rotation) throws {
        try run(
            // An upsert, not INSERT OR REPLACE: a replaced row fires no delete trigger, and rotation_counts
            // would count it twice.
            """
            INSERT INTO rotations (\(Self.rotationColumns))
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            \(RotationSQL.onConflictUpdate)
            """,
            [
                r.device, r.target.description, r.sha256, r.state.rawValue, r.attempts, r.jti, r.seq, r.lastError,
                r.nextAttemptAt, r.createdAt, r.updatedAt, r.issuedAt, r.sentAt, r.appliedAt, r.verifiedAt, r.resends,
                r.issuedBy,
            ])
    }

    func insertBundle(_ b: BundleRecord) throws {
        try run(
            "INSERT INTO bundles (jti, device, seq, iat, exp, jws, max_message) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [b.jti, b.device, b.seq, b.iat, b.exp, b.jws, b.maxMessage])
    }

    func bundle(jti: String) throws -> BundleRecord? {
        guard let row = try row("SELECT jti, device, seq, iat, exp, jws, max_message FROM bundles WHERE jti = ?", [jti])
        else {
            return nil
        }
        return BundleRecord(
            jti: row[0], device: row[1], seq: row[2], iat: row[3], exp: row[4], jws: row[5], maxMessage: row[6])
    }

    func appendHistory(device: String, entry: HistoryEntry) throws {
        try run(
            "INSERT INTO history (device, target, at, state, jti, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [device, entry.target, entry.at, entry.state, entry.jti, entry.detail])
    }

    func prune(device: String, keepHistory: Int, keepBundles: Int) throws {
        try run(
            """
            DELETE FROM history WHERE device = ?
                AND id < (SELECT id FROM history WHERE device = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
            """, [device, device, keepHistory - 1])
        try run(
            """
            DELETE FROM bundles WHERE device = ?
                AND seq < (SELECT seq FROM bundles WHERE device = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)
                AND NOT EXISTS (SELECT 1 FROM rotations WHERE rotations.jti = bundles.jti)
            """, [device, device, keepBundles - 1])
    }

    func prune(before: Int64, limit: Int) throws -> Int {
        try run(
            """
            DELETE FROM history WHERE id IN
                (SELECT id FROM (SELECT id, at FROM history ORDER BY id LIMIT ?) WHERE at < ?)
            """, [limit, before])
        var deleted = db.changesCount
        try run(
            """
            DELETE FROM bundles WHERE jti IN (SELECT jti FROM bundles WHERE exp < ?
                AND NOT EXISTS (SELECT 1 FROM rotations WHERE rotations.jti = bundles.jti) LIMIT ?)
            """, [before, limit])
        deleted += db.changesCount
        return deleted
    }

    func history(device: String, limit: Int) throws -> [HistoryEntry] {
        try rows(
            "SELECT at, target, state, jti, detail FROM history WHERE device = ? ORDER BY id DESC LIMIT ?",
            [device, limit]
        ).reversed().map { HistoryEntry(at: $0[0], target: $0[1], state: $0[2], jti: $0[3], detail: $0[4]) }
    }

    func rotationsNeedingTick(now: Int64, ackTimeout: Int64, limit: Int) throws -> [Rotation] {
        try rows(SQLiteQueries.needingTick, [now, now - ackTimeout, now - ackTimeout, limit]).map(Self.rotation(from:))
    }

    func rotationsAwaitingDelivery(issuedBy replica: String?, includingSent: Bool) throws -> [Rotation] {
        try rows(
            SQLiteQueries.awaitingDelivery(includingSent: includingSent, byReplica: replica != nil),
            replica.map { [$0] } ?? []
        ).map(Self.rotation(from:))
    }

    func rotationCounts() throws -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for row in try rows("SELECT target, state, n FROM rotation_counts WHERE n > 0") {
            counts[row[0], default: [:]][row[1]] = row[2]
        }
        return counts
    }

    func deviceCount() throws -> Int {
        try count("SELECT COUNT(*) FROM devices")
    }

    func rememberRequest(jti: String, at: Int64, forgetBefore: Int64) throws -> Bool {
        try run("DELETE FROM operator_requests WHERE at < ?", [forgetBefore])
        try run("INSERT OR IGNORE INTO operator_requests (jti, at) VALUES (?, ?)", [jti, at])
        return db.changesCount == 1
    }

    func saveExpiry(device: String, target: String, notAfter: Int64?) throws {
        try run(
            "INSERT OR REPLACE INTO expiry (device, target, not_after) VALUES (?, ?, ?)", [device, target, notAfter])
    }

    func expiryHistogram(limits: [Int64]) throws -> [String: [Int]] {
        // Per target, range counts over the (target, not_after) index: each costs the rows below its limit, where
        // one GROUP BY with a SUM per limit read every row (~30 ms at 100,000 devices).
        var result: [String: [Int]] = [:]
        var target = try String.fetchOne(db.cachedStatement(sql: "SELECT MIN(target) FROM expiry"))
        while let current = target {
            var counts = try limits.map { limit in
                try count("SELECT COUNT(*) FROM expiry WHERE target = ? AND not_after < ?", [current, limit])
            }
            let total = try count("SELECT COUNT(*) FROM expiry WHERE target = ? AND not_after IS NOT NULL", [current])
            if total > 0 {
                counts.append(total)
                result[current] = counts
            }
            target = try String.fetchOne(
                db.cachedStatement(sql: "SELECT MIN(target) FROM expiry WHERE target > ?"), arguments: [current])
        }
        return result
    }

    func strandedRisk(now: Int64, limit: Int) throws -> StrandedRisk {
        let week = StrandedRisk.weekSeconds
        let atRisk =
            "FROM expiry e JOIN devices d ON d.id = e.device WHERE e.not_after IS NOT NULL AND e.not_after - ? < ? - d.last_seen"
        var risk = StrandedRisk()
        for row in try rows(
            "SELECT e.target, CASE WHEN e.not_after <= ? THEN 0 ELSE (e.not_after - ? + \(week - 1)) / \(week) END, COUNT(*) \(atRisk) GROUP BY 1, 2",
            [now, now, now, now])
        {
            risk.byWeek[row[0], default: [:]][row[1]] = row[2]
        }
        risk.devices = try rows(
            "SELECT e.device, e.target, e.not_after, d.last_seen \(atRisk) ORDER BY e.not_after, e.device LIMIT ?",
            [now, now, limit]
        ).map { StrandedRisk.Device(device: $0[0], target: $0[1], notAfter: $0[2], lastSeen: $0[3]) }
        return risk
    }

    func deviceCount(trustingKey kid: String) throws -> Int {
        // instr, not LIKE: kids are base64url and may contain '_', a LIKE wildcard.
        try count("SELECT COUNT(*) FROM devices WHERE instr(keys, ',' || ? || ',') > 0", [kid])
    }

    func devices(after: String?, limit: Int) throws -> [DeviceRecord] {
        try rows("SELECT \(Self.deviceColumns) FROM devices WHERE id > ? ORDER BY id LIMIT ?", [after ?? "", limit])
            .map(device(from:))
    }

    func saveCampaign(_ campaign: Campaign) throws {
        let body = try JSONEncoder().encode(campaign)
        try run(
            "INSERT OR REPLACE INTO campaigns (id, name, state, created_at, body) VALUES (?, ?, ?, ?, ?)",
            [campaign.id, campaign.name, campaign.state.rawValue, campaign.createdAt, body])
    }

    func campaigns() throws -> [Campaign] {
        try rows("SELECT body FROM campaigns ORDER BY created_at, id").map { row in
            try JSONDecoder().decode(Campaign.self, from: row[0] as Data)
        }
    }

    func saveMember(_ m: CampaignMember) throws {
        try run(
            "INSERT OR REPLACE INTO campaign_members (\(Self.memberColumns)) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [m.campaign, m.device, m.wave, m.state.rawValue, m.settled, m.reason, m.updatedAt])
    }

    func member(campaign: String, device: String) throws -> CampaignMember? {
        try row(
            "SELECT \(Self.memberColumns) FROM campaign_members WHERE campaign = ? AND device = ?", [campaign, device]
        )
        .map(Self.member(from:))
    }

    func memberships(device: String) throws -> [CampaignMember] {
        try rows("SELECT \(Self.memberColumns) FROM campaign_members WHERE device = ?", [device]).map(
            Self.member(from:))
    }

    func members(
        campaign: String, maxWave: Int?, state: MemberState?, after: String?, limit: Int
    ) throws -> [CampaignMember] {
        var sql = "SELECT \(Self.memberColumns) FROM campaign_members WHERE campaign = ? AND device > ?"
        var arguments: StatementArguments = [campaign, after ?? ""]
        if let state {
            sql += " AND state = ?"
            arguments += [state.rawValue]
        }
        if let maxWave {
            sql += " AND wave <= ?"
            arguments += [maxWave]
        }
        sql += " ORDER BY device LIMIT ?"
        arguments += [limit]
        return try rows(sql, arguments).map(Self.member(from:))
    }

    func memberCounts(campaign: String) throws -> [Int: WaveCounts] {
        var counts: [Int: WaveCounts] = [:]
        for row in try rows(
            "SELECT wave, state, COUNT(*), SUM(settled) FROM campaign_members WHERE campaign = ? GROUP BY wave, state",
            [campaign])
        {
            guard let state = MemberState(rawValue: row[1]) else { continue }
            let wave: Int = row[0]
            counts[wave, default: WaveCounts()].states[state] = row[2]
            counts[wave, default: WaveCounts()].settled += (row[3] as Int?) ?? 0
        }
        return counts
    }

    func lockDevice(_ device: String) throws {
        // The database pool has one writer: a write transaction already holds every device.
    }

    func claimAwaitingBundle(limit: Int, holding: [String]) throws -> [String] {
        // One writer: nothing to skip, every device is already held.
        let held = holding.map { _ in " AND substr(target, 1, length(?)) <> ?" }.joined()
        var arguments = StatementArguments()
        for prefix in holding { arguments += [prefix, prefix] }
        arguments += [limit]
        var devices: [String] = []
        for device in try String.fetchAll(
            db.cachedStatement(
                sql:
                    "SELECT device FROM rotations WHERE state = 'pending' AND jti IS NULL\(held) ORDER BY updated_at, device LIMIT ?"
            ),
            arguments: arguments)
        where !devices.contains(device) {
            devices.append(device)
        }
        return devices
    }

    /// One process owns a SQLite store: it is always the leader.
    func fence() throws {}

    /// Reads cost no round trip here.
    func prefetch(devices: [String]) throws {}

    func heartbeat(replica: String, at: Int64) throws {
        try run("INSERT OR REPLACE INTO replicas (id, seen_at) VALUES (?, ?)", [replica, at])
    }

    func replicas(seenBefore before: Int64) throws -> [String] {
        try String.fetchAll(
            db.cachedStatement(sql: "SELECT id FROM replicas WHERE seen_at < ? ORDER BY id"), arguments: [before])
    }

    func forgetReplica(_ replica: String) throws {
        try run("DELETE FROM replicas WHERE id = ?", [replica])
    }

    /// A row of ``memberColumns``.
    static func member(from row: Row) -> CampaignMember {
        CampaignMember(
            campaign: row[0], device: row[1], wave: row[2], state: MemberState(rawValue: row[3]) ?? .pending,
            settled: row[4], reason: row[5], updatedAt: row[6])
    }

    /// A row of ``deviceColumns``.
    func device(from row: Row) -> DeviceRecord {
        let id: String = row[0]
        let inventoryBytes: [UInt8]? = (row[3] as Data?).map(Array.init)
        return DeviceRecord(
            id: id, firstSeen: row[1], lastSeen: row[2],
            inventory: inventoryBytes.flatMap { inventories.decode(device: id, bytes: $0) }, issuedSeq: row[4])
    }

    /// A row of ``rotationColumns``.
    static func rotation(from row: Row) -> Rotation {
        var r = Rotation(
            device: row[0], target: RotationTarget(row[1] as String), sha256: row[2],
            state: RotationState(rawValue: row[3]) ?? .pending,
            now: row[9])
        r.attempts = row[4]
        r.jti = row[5]
        r.seq = row[6]
        r.lastError = row[7]
        r.nextAttemptAt = row[8]
        r.updatedAt = row[10]
        r.issuedAt = row[11]
        r.sentAt = row[12]
        r.appliedAt = row[13]
        r.verifiedAt = row[14]
        r.resends = row[15]
        r.issuedBy = row[16]
        return r
    }
}

/// Reads that run often or over every rotation, where a plan that scans the table costs (a test reads their plans:
/// ``SQLiteStore/plan(of:)``).
package enum SQLiteQueries {
    /// What a tick looks at: each branch on a partial index, since it runs four times a second whatever the
    /// fleet's size.
    package static let needingTick = """
        SELECT \(RotationSQL.columns) FROM rotations WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?
        UNION ALL
        SELECT \(RotationSQL.columns) FROM rotations WHERE jti IS NOT NULL AND state IN ('pending', 'sent')
            AND COALESCE(sent_at, issued_at) <= ?
        UNION ALL
        SELECT \(RotationSQL.columns) FROM rotations WHERE state = 'applied' AND sha256 = '' AND applied_at <= ?
        LIMIT ?
        """

    /// Bundles to send again after a start (`pending`) or a reconnection (also `sent`). The in-flight index's own
    /// condition is repeated so that SQLite uses it (it does not infer `state IN ('pending', 'sent')` from
    /// `state = 'pending'`): a restart at 100,000 devices otherwise scanned every rotation, 0.125 s (#35 §3).
    package static func awaitingDelivery(includingSent: Bool, byReplica: Bool) -> String {
        "SELECT \(RotationSQL.columns) FROM rotations WHERE jti IS NOT NULL AND state IN ('pending', 'sent')"
            + (includingSent ? "" : " AND state = 'pending'") + (byReplica ? " AND issued_by = ?" : "")
    }
}

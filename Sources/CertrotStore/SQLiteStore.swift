import CertrotCore
import Foundation
import GRDB

/// The SQLite store, through GRDB. WAL mode; one writer; schema migrations versioned and applied at open.
public final class SQLiteStore: RotationStore {
    private let pool: DatabasePool

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // Truncate the WAL after checkpoints so that it does not keep its high-water size on disk.
            try db.execute(sql: "PRAGMA journal_size_limit = 67108864")
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
    }

    /// `sqlite:PATH` (also `sqlite://PATH`) → PATH.
    public static func path(fromURL url: String) -> String? {
        if url.hasPrefix("sqlite://") { return String(url.dropFirst("sqlite://".count)) }
        if url.hasPrefix("sqlite:") { return String(url.dropFirst("sqlite:".count)) }
        return nil
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE devices (
                        id TEXT PRIMARY KEY NOT NULL,
                        first_seen INTEGER NOT NULL,
                        last_seen INTEGER NOT NULL,
                        inventory BLOB,
                        keys TEXT,
                        issued_seq INTEGER NOT NULL DEFAULT 0
                    );
                    CREATE TABLE rotations (
                        device TEXT NOT NULL,
                        target TEXT NOT NULL,
                        sha256 TEXT NOT NULL,
                        state TEXT NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        jti TEXT,
                        seq INTEGER,
                        last_error TEXT,
                        next_attempt_at INTEGER,
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL,
                        issued_at INTEGER,
                        sent_at INTEGER,
                        applied_at INTEGER,
                        verified_at INTEGER,
                        resends INTEGER NOT NULL DEFAULT 0,
                        PRIMARY KEY (device, target)
                    );
                    CREATE INDEX rotations_jti ON rotations(jti);
                    CREATE INDEX rotations_next_attempt ON rotations(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
                    CREATE INDEX rotations_in_flight ON rotations(state, sent_at, issued_at)
                        WHERE jti IS NOT NULL AND state IN ('pending', 'sent');
                    CREATE TABLE bundles (
                        jti TEXT PRIMARY KEY NOT NULL,
                        device TEXT NOT NULL,
                        seq INTEGER NOT NULL,
                        iat INTEGER NOT NULL,
                        exp INTEGER NOT NULL,
                        jws TEXT NOT NULL,
                        max_message INTEGER NOT NULL,
                        UNIQUE (device, seq)
                    );
                    CREATE TABLE history (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        device TEXT NOT NULL,
                        target TEXT NOT NULL,
                        at INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        jti TEXT,
                        detail TEXT
                    );
                    CREATE INDEX history_device ON history(device, id);
                    CREATE TABLE operator_requests (
                        jti TEXT PRIMARY KEY NOT NULL,
                        at INTEGER NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v2-expiry") { db in
            try db.execute(
                sql: """
                    CREATE TABLE expiry (
                        device TEXT NOT NULL,
                        target TEXT NOT NULL,
                        not_after INTEGER,
                        PRIMARY KEY (device, target)
                    );
                    """)
        }
        migrator.registerMigration("v3-campaigns") { db in
            try db.execute(
                sql: """
                    CREATE TABLE campaigns (
                        id TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        state TEXT NOT NULL,
                        created_at INTEGER NOT NULL,
                        body BLOB NOT NULL
                    );
                    CREATE TABLE campaign_members (
                        campaign TEXT NOT NULL,
                        device TEXT NOT NULL,
                        wave INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        settled INTEGER NOT NULL DEFAULT 0,
                        reason TEXT,
                        updated_at INTEGER NOT NULL,
                        PRIMARY KEY (campaign, device)
                    );
                    CREATE INDEX campaign_members_device ON campaign_members(device);
                    CREATE INDEX campaign_members_state ON campaign_members(campaign, state, wave);
                    """)
        }
        migrator.registerMigration("v4-cluster") { db in
            try db.execute(
                sql: """
                    ALTER TABLE rotations ADD COLUMN issued_by TEXT;
                    CREATE TABLE replicas (
                        id TEXT PRIMARY KEY NOT NULL,
                        seen_at INTEGER NOT NULL
                    );
                    """)
        }
        return migrator
    }

    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try pool.write { db in try body(SQLiteTransaction(db: db)) }
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try pool.read { db in try body(SQLiteTransaction(db: db)) }
    }
}

struct SQLiteTransaction: StoreTransaction {
    let db: Database

    func device(_ id: String) throws -> DeviceRecord? {
        try Row.fetchOne(db, sql: "SELECT * FROM devices WHERE id = ?", arguments: [id]).map(Self.device(from:))
    }

    func saveDevice(_ device: DeviceRecord) throws {
        try db.execute(
            sql: """
                INSERT INTO devices (id, first_seen, last_seen, inventory, keys, issued_seq) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen, inventory = excluded.inventory,
                    keys = excluded.keys, issued_seq = excluded.issued_seq
                """,
            arguments: [
                device.id, device.firstSeen, device.lastSeen, device.inventory.map { Data($0.encoded()) },
                device.inventory?.keys.map { "," + $0.joined(separator: ",") + "," }, device.issuedSeq,
            ])
    }

    func rotations(device: String) throws -> [Rotation] {
        try Row.fetchAll(db, sql: "SELECT * FROM rotations WHERE device = ? ORDER BY target", arguments: [device])
            .map(Self.rotation(from:))
    }

    func rotations(jti: String) throws -> [Rotation] {
        try Row.fetchAll(db, sql: "SELECT * FROM rotations WHERE jti = ?", arguments: [jti]).map(Self.rotation(from:))
    }

    func saveRotation(_ r: Rotation) throws {
        try db.execute(
            sql: """
                INSERT OR REPLACE INTO rotations (device, target, sha256, state, attempts, jti, seq, last_error,
                    next_attempt_at, created_at, updated_at, issued_at, sent_at, applied_at, verified_at, resends, issued_by)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                r.device, r.target, r.sha256, r.state.rawValue, r.attempts, r.jti, r.seq, r.lastError,
                r.nextAttemptAt, r.createdAt, r.updatedAt, r.issuedAt, r.sentAt, r.appliedAt, r.verifiedAt, r.resends,
                r.issuedBy,
            ])
    }

    func insertBundle(_ b: BundleRecord) throws {
        try db.execute(
            sql: "INSERT INTO bundles (jti, device, seq, iat, exp, jws, max_message) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [b.jti, b.device, b.seq, b.iat, b.exp, b.jws, b.maxMessage])
    }

    func bundle(jti: String) throws -> BundleRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM bundles WHERE jti = ?", arguments: [jti]) else {
            return nil
        }
        return BundleRecord(
            jti: row["jti"], device: row["device"], seq: row["seq"], iat: row["iat"], exp: row["exp"], jws: row["jws"],
            maxMessage: row["max_message"])
    }

    func appendHistory(device: String, entry: HistoryEntry) throws {
        try db.execute(
            sql: "INSERT INTO history (device, target, at, state, jti, detail) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [device, entry.target, entry.at, entry.state, entry.jti, entry.detail])
    }

    func history(device: String, limit: Int) throws -> [HistoryEntry] {
        try Row.fetchAll(
            db, sql: "SELECT * FROM history WHERE device = ? ORDER BY id DESC LIMIT ?", arguments: [device, limit]
        ).reversed().map {
            HistoryEntry(at: $0["at"], target: $0["target"], state: $0["state"], jti: $0["jti"], detail: $0["detail"])
        }
    }

    func rotationsNeedingTick(now: Int64, ackTimeout: Int64, limit: Int) throws -> [Rotation] {
        let cutoff = now - ackTimeout
        return try Row.fetchAll(
            db,
            sql: """
                SELECT * FROM rotations WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?
                UNION ALL
                SELECT * FROM rotations WHERE jti IS NOT NULL AND state IN ('pending', 'sent')
                    AND COALESCE(sent_at, issued_at) <= ?
                LIMIT ?
                """,
            arguments: [now, cutoff, limit]
        ).map(Self.rotation(from:))
    }

    func rotationsAwaitingDelivery(issuedBy replica: String?) throws -> [Rotation] {
        guard let replica else {
            return try Row.fetchAll(db, sql: "SELECT * FROM rotations WHERE state = 'pending' AND jti IS NOT NULL")
                .map(Self.rotation(from:))
        }
        return try Row.fetchAll(
            db, sql: "SELECT * FROM rotations WHERE state = 'pending' AND jti IS NOT NULL AND issued_by = ?", arguments: [replica]
        ).map(Self.rotation(from:))
    }

    func rotationCounts() throws -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT target, state, COUNT(*) AS n FROM rotations GROUP BY target, state") {
            counts[row["target"], default: [:]][row["state"]] = row["n"]
        }
        return counts
    }

    func deviceCount() throws -> Int {
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM devices") ?? 0
    }

    func rememberRequest(jti: String, at: Int64, forgetBefore: Int64) throws -> Bool {
        try db.execute(sql: "DELETE FROM operator_requests WHERE at < ?", arguments: [forgetBefore])
        try db.execute(sql: "INSERT OR IGNORE INTO operator_requests (jti, at) VALUES (?, ?)", arguments: [jti, at])
        return db.changesCount == 1
    }

    func saveExpiry(device: String, target: String, notAfter: Int64?) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO expiry (device, target, not_after) VALUES (?, ?, ?)",
            arguments: [device, target, notAfter])
    }

    func expiryHistogram(limits: [Int64]) throws -> [String: [Int]] {
        let columns = limits.enumerated().map { "SUM(not_after < :l\($0.offset))" }.joined(separator: ", ")
        var arguments: [String: (any DatabaseValueConvertible)?] = [:]
        for (index, limit) in limits.enumerated() { arguments["l\(index)"] = limit }
        var result: [String: [Int]] = [:]
        for row in try Row.fetchAll(
            db, sql: "SELECT target, \(columns), COUNT(*) FROM expiry WHERE not_after IS NOT NULL GROUP BY target",
            arguments: StatementArguments(arguments))
        {
            result[row[0]] = (1...(limits.count + 1)).map { (row[$0] as Int?) ?? 0 }
        }
        return result
    }

    func deviceCount(trustingKey kid: String) throws -> Int {
        // instr, not LIKE: kids are base64url and may contain '_', a LIKE wildcard.
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM devices WHERE instr(keys, ',' || ? || ',') > 0", arguments: [kid]) ?? 0
    }

    func devices(after: String?, limit: Int) throws -> [DeviceRecord] {
        try Row.fetchAll(
            db, sql: "SELECT * FROM devices WHERE id > ? ORDER BY id LIMIT ?", arguments: [after ?? "", limit]
        ).map(Self.device(from:))
    }

    func saveCampaign(_ campaign: Campaign) throws {
        let body = try JSONEncoder().encode(campaign)
        try db.execute(
            sql: "INSERT OR REPLACE INTO campaigns (id, name, state, created_at, body) VALUES (?, ?, ?, ?, ?)",
            arguments: [campaign.id, campaign.name, campaign.state.rawValue, campaign.createdAt, body])
    }

    func campaigns() throws -> [Campaign] {
        try Row.fetchAll(db, sql: "SELECT body FROM campaigns ORDER BY created_at, id").map { row in
            try JSONDecoder().decode(Campaign.self, from: row["body"] as Data)
        }
    }

    func saveMember(_ m: CampaignMember) throws {
        try db.execute(
            sql: """
                INSERT OR REPLACE INTO campaign_members (campaign, device, wave, state, settled, reason, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [m.campaign, m.device, m.wave, m.state.rawValue, m.settled, m.reason, m.updatedAt])
    }

    func member(campaign: String, device: String) throws -> CampaignMember? {
        try Row.fetchOne(
            db, sql: "SELECT * FROM campaign_members WHERE campaign = ? AND device = ?", arguments: [campaign, device]
        ).map(Self.member(from:))
    }

    func memberships(device: String) throws -> [CampaignMember] {
        try Row.fetchAll(db, sql: "SELECT * FROM campaign_members WHERE device = ?", arguments: [device])
            .map(Self.member(from:))
    }

    func members(campaign: String, maxWave: Int?, state: MemberState?, after: String?, limit: Int) throws -> [CampaignMember] {
        var sql = "SELECT * FROM campaign_members WHERE campaign = ? AND device > ?"
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
        return try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.member(from:))
    }

    func memberCounts(campaign: String) throws -> [Int: WaveCounts] {
        var counts: [Int: WaveCounts] = [:]
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT wave, state, COUNT(*) AS n, SUM(settled) AS s FROM campaign_members WHERE campaign = ?
                GROUP BY wave, state
                """,
            arguments: [campaign])
        {
            guard let state = MemberState(rawValue: row["state"]) else { continue }
            let wave: Int = row["wave"]
            counts[wave, default: WaveCounts()].states[state] = row["n"]
            counts[wave, default: WaveCounts()].settled += (row["s"] as Int?) ?? 0
        }
        return counts
    }

    func lockDevice(_ device: String) throws {
        // The database pool has one writer: a write transaction already holds every device.
    }

    func heartbeat(replica: String, at: Int64) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO replicas (id, seen_at) VALUES (?, ?)", arguments: [replica, at])
    }

    func replicas(seenBefore before: Int64) throws -> [String] {
        try String.fetchAll(db, sql: "SELECT id FROM replicas WHERE seen_at < ? ORDER BY id", arguments: [before])
    }

    func forgetReplica(_ replica: String) throws {
        try db.execute(sql: "DELETE FROM replicas WHERE id = ?", arguments: [replica])
    }

    static func member(from row: Row) -> CampaignMember {
        CampaignMember(
            campaign: row["campaign"], device: row["device"], wave: row["wave"],
            state: MemberState(rawValue: row["state"]) ?? .pending, settled: row["settled"], reason: row["reason"],
            updatedAt: row["updated_at"])
    }

    static func device(from row: Row) -> DeviceRecord {
        let inventoryBytes: [UInt8]? = (row["inventory"] as Data?).map(Array.init)
        return DeviceRecord(
            id: row["id"], firstSeen: row["first_seen"], lastSeen: row["last_seen"],
            inventory: inventoryBytes.flatMap { try? Inventory.parse($0) }, issuedSeq: row["issued_seq"])
    }

    static func rotation(from row: Row) -> Rotation {
        var r = Rotation(
            device: row["device"], target: row["target"], sha256: row["sha256"],
            state: RotationState(rawValue: row["state"]) ?? .pending, now: row["created_at"])
        r.attempts = row["attempts"]
        r.jti = row["jti"]
        r.seq = row["seq"]
        r.lastError = row["last_error"]
        r.nextAttemptAt = row["next_attempt_at"]
        r.updatedAt = row["updated_at"]
        r.issuedAt = row["issued_at"]
        r.sentAt = row["sent_at"]
        r.appliedAt = row["applied_at"]
        r.verifiedAt = row["verified_at"]
        r.resends = row["resends"]
        r.issuedBy = row["issued_by"]
        return r
    }
}

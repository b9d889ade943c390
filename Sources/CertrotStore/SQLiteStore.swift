import CertrotCore
import Foundation
import GRDB

/// The SQLite store, through GRDB. WAL mode; one writer; schema migrations versioned and applied at open.
public final class SQLiteStore: RotationStore {
    private let pool: DatabasePool
    private let inventories = StoredInventories()
    private let lock: StoreLock

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema. Refuses a database
    /// another process has open as a store (two daemons on one file would both send every bundle) and one that
    /// fails SQLite's `quick_check`.
    public init(path: String) throws {
        lock = try StoreLock(path: path + ".lock", store: "sqlite:\(path)")
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // 64 MB of page cache per connection (SQLite's default is 2 MB): at 100,000 devices a campaign's
            // reads otherwise go to the kernel for most pages. Pages are cached only once read.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            // Truncate the WAL after checkpoints so that it does not keep its high-water size on disk.
            try db.execute(sql: "PRAGMA journal_size_limit = 67108864")
        }
        do {
            pool = try DatabasePool(path: path, configuration: config)
            let check = try pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check(5)") }
            guard check == ["ok"] else {
                throw StoreError(check.joined(separator: "; "))
            }
        } catch {
            throw StoreError(
                "store sqlite:\(path) is damaged (\(error)); certrot will not run on it: restore it from a backup, "
                    + "or move it aside to start with an empty store (devices then rotate again from their inventories)"
            )
        }
        try Self.migrator.migrate(pool)
    }

    /// Lets another process open the store (the daemon stopped).
    public func close() {
        try? pool.close()
        lock.release()
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
        migrator.registerMigration("v5-counts") { db in
            // fleet.status counts rotations by target and state: kept by triggers rather than counted (a GROUP BY
            // over 100,000 rotations took ~50 ms); and counts expiry dates by range over an index. Members of one
            // state in device order (admission, the failures in campaign.status) come from an index: through the
            // primary key SQLite stepped over every member already admitted, on every tick.
            try db.execute(
                sql: """
                    CREATE TABLE rotation_counts (
                        target TEXT NOT NULL,
                        state TEXT NOT NULL,
                        n INTEGER NOT NULL,
                        PRIMARY KEY (target, state)
                    ) WITHOUT ROWID;
                    INSERT INTO rotation_counts (target, state, n)
                        SELECT target, state, COUNT(*) FROM rotations GROUP BY target, state;
                    CREATE TRIGGER rotations_counted_insert AFTER INSERT ON rotations BEGIN
                        INSERT INTO rotation_counts (target, state, n) VALUES (NEW.target, NEW.state, 1)
                            ON CONFLICT (target, state) DO UPDATE SET n = n + 1;
                    END;
                    CREATE TRIGGER rotations_counted_delete AFTER DELETE ON rotations BEGIN
                        UPDATE rotation_counts SET n = n - 1 WHERE target = OLD.target AND state = OLD.state;
                    END;
                    CREATE TRIGGER rotations_counted_update AFTER UPDATE OF target, state ON rotations
                    WHEN OLD.target IS NOT NEW.target OR OLD.state IS NOT NEW.state BEGIN
                        UPDATE rotation_counts SET n = n - 1 WHERE target = OLD.target AND state = OLD.state;
                        INSERT INTO rotation_counts (target, state, n) VALUES (NEW.target, NEW.state, 1)
                            ON CONFLICT (target, state) DO UPDATE SET n = n + 1;
                    END;
                    CREATE INDEX expiry_target_not_after ON expiry(target, not_after);
                    CREATE INDEX campaign_members_state_device ON campaign_members(campaign, state, device);
                    """)
        }
        return migrator
    }

    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try pool.write { db in try body(SQLiteTransaction(db: db, inventories: inventories)) }
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try pool.read { db in try body(SQLiteTransaction(db: db, inventories: inventories)) }
    }
}

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
        try rows(
            """
            SELECT \(Self.rotationColumns) FROM rotations WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?
            UNION ALL
            SELECT \(Self.rotationColumns) FROM rotations WHERE jti IS NOT NULL AND state IN ('pending', 'sent')
                AND COALESCE(sent_at, issued_at) <= ?
            LIMIT ?
            """,
            [now, now - ackTimeout, limit]
        ).map(Self.rotation(from:))
    }

    func rotationsAwaitingDelivery(issuedBy replica: String?) throws -> [Rotation] {
        guard let replica else {
            return try rows("SELECT \(Self.rotationColumns) FROM rotations WHERE state = 'pending' AND jti IS NOT NULL")
                .map(Self.rotation(from:))
        }
        return try rows(
            "SELECT \(Self.rotationColumns) FROM rotations WHERE state = 'pending' AND jti IS NOT NULL AND issued_by = ?",
            [replica]
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

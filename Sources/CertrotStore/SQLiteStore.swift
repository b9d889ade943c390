import CertrotCore
import Foundation
import GRDB

/// The SQLite store, through GRDB. WAL mode; one writer; schema migrations versioned and applied at open.
public final class SQLiteStore: RotationStore {
    private let pool: DatabasePool
    private let inventories = StoredInventories()
    private let lock: StoreLock
    private let path: String

    /// The connection `quick_check` runs on: SQLite's default cache, waiting like the pool for a busy file.
    private static var checkConfiguration: Configuration {
        var config = Configuration()
        config.busyMode = .timeout(10)
        return config
    }

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema. Refuses a database
    /// another process has open as a store (two daemons on one file would both send every bundle) and, with
    /// `checkIntegrity`, one that fails SQLite's `quick_check` (the daemon runs the check beside its start
    /// instead: ``checkIntegrity()``).
    public init(path: String, checkIntegrity: Bool = true) throws {
        lock = try StoreLock(path: path + ".lock", store: "sqlite:\(path)")
        self.path = path
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
        // A new store is private to the daemon's user whatever the umask (SQLite gives its -wal and -shm files the
        // database file's mode): it holds every device's credentials' digests and the audit log.
        if !FileManager.default.fileExists(atPath: path) {
            let fd = open(path, O_CREAT | O_WRONLY, 0o600)
            if fd >= 0 { Glibc.close(fd) }
        }
        do {
            if checkIntegrity { try Self.quickCheck(path: path) }
            pool = try DatabasePool(path: path, configuration: config)
        } catch {
            throw Self.damaged(path, error)
        }
        do {
            try Self.migrator.migrate(pool)
        } catch {
            throw explaining(error)  // a migration that fails on a damaged file says so, as the check would have
        }
    }

    public func checkIntegrity() throws -> Double? {
        let started = ContinuousClock.now
        do {
            try Self.quickCheck(path: path)
        } catch {
            throw Self.damaged(path, error)
        }
        return (ContinuousClock.now - started).inSeconds
    }

    /// SQLite's `quick_check`, which reads every page of the database: on a connection of its own with SQLite's
    /// default 2 MB cache, closed when done, so that it does not leave a reader's 64 MB cache full of pages nothing
    /// asked for (at 1,000,000 known devices that was 30 B of resident memory per device, #35 §3). In WAL mode it
    /// reads a snapshot beside the pool's writer.
    private static func quickCheck(path: String) throws {
        let check = try DatabaseQueue(path: path, configuration: checkConfiguration).read { db in
            try String.fetchAll(db, sql: "PRAGMA quick_check(5)")
        }
        guard check == ["ok"] else { throw StoreError(check.joined(separator: "; ")) }
    }

    private static func damaged(_ path: String, _ error: any Error) -> StoreError {
        StoreError(
            "store sqlite:\(path) is damaged (\(error)); certrot will not run on it: restore it from a backup, "
                + "or move it aside to start with an empty store (devices then rotate again from their inventories)")
    }

    /// SQLite's plan for `sql` (`EXPLAIN QUERY PLAN`, its parameters NULL), one line a step: `SEARCH rotations
    /// USING INDEX …`.
    package func plan(of sql: String) throws -> [String] {
        let nulls = StatementArguments(Array(repeating: DatabaseValue.null, count: sql.filter { $0 == "?" }.count))
        return try pool.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: nulls).map { $0["detail"] as String }
        }
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
        migrator.registerMigration("v6-client-certs") { db in
            try db.execute(
                sql: """
                    CREATE TABLE issued_certs (
                        issuer TEXT NOT NULL,
                        serial TEXT NOT NULL,
                        device TEXT NOT NULL,
                        policy TEXT NOT NULL,
                        tag INTEGER NOT NULL,
                        keygen_jti TEXT NOT NULL UNIQUE,
                        sha256 TEXT NOT NULL,
                        pem TEXT NOT NULL,
                        not_before INTEGER NOT NULL,
                        not_after INTEGER NOT NULL,
                        issued_at INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        revoked_at INTEGER,
                        PRIMARY KEY (issuer, serial)
                    );
                    CREATE INDEX issued_certs_device ON issued_certs(device, issued_at);
                    CREATE INDEX issued_certs_revoked ON issued_certs(issuer, serial) WHERE state = 'revoked';
                    CREATE INDEX rotations_awaiting_csr ON rotations(applied_at) WHERE state = 'applied' AND sha256 = '';
                    """)
        }
        migrator.registerMigration("v7-audit") { db in
            try db.execute(
                sql: """
                    CREATE TABLE audit (
                        seq INTEGER PRIMARY KEY NOT NULL,
                        at INTEGER NOT NULL,
                        kind TEXT NOT NULL,
                        device TEXT,
                        subject TEXT,
                        body TEXT NOT NULL,
                        prev TEXT NOT NULL,
                        hash TEXT NOT NULL,
                        signature TEXT
                    );
                    CREATE INDEX audit_device ON audit(device, seq) WHERE device IS NOT NULL;
                    """)
        }
        migrator.registerMigration("v9-learned-identities") { db in
            try db.execute(
                sql: """
                    CREATE TABLE learned_identities (
                        device TEXT PRIMARY KEY NOT NULL,
                        uuid TEXT NOT NULL,
                        candidates TEXT NOT NULL,
                        first_seen_at INTEGER NOT NULL,
                        pinned_at INTEGER
                    );
                    """)
        }
        migrator.registerMigration("v10-issuance-budget") { db in
            // The fleet's issuance budget counts by time issued; retention deletes by expiry.
            try db.execute(
                sql: """
                    CREATE INDEX issued_certs_issued_at ON issued_certs(issued_at);
                    CREATE INDEX issued_certs_not_after ON issued_certs(not_after);
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

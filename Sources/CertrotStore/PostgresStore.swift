import CertrotCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// The PostgreSQL store, through postgres-nio. Same protocol, same schema versions and the same answers as
/// ``SQLiteStore`` (one conformance suite runs against both).
///
/// The store protocol is synchronous (a transaction body is plain code between BEGIN and COMMIT), so each
/// statement waits on postgres-nio's future. The connections run on an event loop of their own, never on a
/// caller's thread, so the wait cannot deadlock the loop it waits for. One connection writes, one reads and one
/// holds the cluster leadership; each is used by one caller at a time and reopened when it was lost.
public final class PostgresStore: RotationStore {
    private let group: MultiThreadedEventLoopGroup
    private let writer: Slot
    private let reader: Slot
    private let leadership: Leadership

    /// Connects to `url` (`postgres://user[:password]@host[:port]/database[?sslmode=disable|require]`) and
    /// migrates the database to the current schema (under an advisory lock, so replicas starting together apply
    /// each migration once).
    public init(url: String, logger: Logger = Logger(label: "certrot.store.postgres")) throws {
        let configuration = try Self.configuration(fromURL: url)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let endpoint = Endpoint(
            configuration: configuration, eventLoop: group.next(), logger: logger, inventories: StoredInventories())
        writer = Slot(endpoint)
        reader = Slot(endpoint)
        leadership = Leadership(endpoint)
        do {
            try writer.transaction(readOnly: false) { tx in try Self.migrate(tx) }
        } catch {
            writer.close()
            reader.close()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    deinit {
        writer.close()
        reader.close()
        leadership.close()
        try? group.syncShutdownGracefully()
    }

    public var isShared: Bool { true }

    public func holdLeadership() throws -> Bool { leadership.hold() }

    /// Gives up the leadership lock (its session ends) and the connections; another process may lead from now on.
    public func close() {
        leadership.close()
        writer.close()
        reader.close()
    }

    /// `url` without its password, for messages.
    public static func redacted(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@"),
            let colon = url[scheme.upperBound..<at].firstIndex(of: ":")
        else { return url }
        return String(url[..<url.index(after: colon)]) + "***" + String(url[at...])
    }

    public static func isURL(_ url: String) -> Bool {
        url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")
    }

    /// Parses a libpq-style URL. Only `sslmode` is read from the query; TLS verifies the server's certificate
    /// against the system trust store when required.
    public static func configuration(fromURL url: String) throws -> PostgresConnection.Configuration {
        guard isURL(url), let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            throw StoreError("'\(url)' is not postgres://user[:password]@host[:port]/database")
        }
        guard let user = components.user, !user.isEmpty else { throw StoreError("'\(url)' names no user") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else { throw StoreError("'\(url)' names no database") }
        let tls: PostgresConnection.Configuration.TLS
        switch components.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable" {
        case "disable": tls = .disable
        case "require", "verify-full":
            tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case let other: throw StoreError("sslmode '\(other)' is not supported (disable, require, verify-full)")
        }
        return PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: user, password: components.password,
            database: database, tls: tls)
    }

    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try writer.transaction(readOnly: false, body)
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try reader.transaction(readOnly: true, body)
    }

    /// Where the store's connections go; they all run on the store's own event loop.
    struct Endpoint: Sendable {
        let configuration: PostgresConnection.Configuration
        let eventLoop: any EventLoop
        let logger: Logger
        let inventories: StoredInventories

        /// `held` while it is open, else a new connection.
        func open(_ held: PostgresConnection?, id: Int) throws -> PostgresConnection {
            if let held, !held.isClosed { return held }
            return try PostgresConnection.connect(on: eventLoop, configuration: configuration, id: id, logger: logger)
                .wait()
        }
    }

    /// One connection, used by one transaction at a time.
    final class Slot: Sendable {
        let endpoint: Endpoint
        private let connection = Mutex<PostgresConnection?>(nil)

        init(_ endpoint: Endpoint) { self.endpoint = endpoint }

        func transaction<T>(readOnly: Bool, _ body: (PostgresTransaction) throws -> T) throws -> T {
            try connection.withLock { held in
                let open = try endpoint.open(held, id: 1)
                held = open
                let tx = PostgresTransaction(
                    connection: open, logger: endpoint.logger, inventories: endpoint.inventories)
                do {
                    try tx.execute(readOnly ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN")
                    let result = try body(tx)
                    try tx.execute("COMMIT")
                    return result
                } catch {
                    if (try? tx.execute("ROLLBACK")) == nil {
                        // The connection is unusable: open a new one next time.
                        try? open.close().wait()
                        held = nil
                    }
                    throw error
                }
            }
        }

        func close() {
            connection.withLock { held in
                try? held?.close().wait()
                held = nil
            }
        }
    }

    /// The cluster's leadership: a session-level advisory lock held on a connection of its own. It is the leader's
    /// while that session lives; when the process dies, PostgreSQL ends the session and the lock is free for
    /// another replica. Checked (and taken when free) on every call.
    final class Leadership: Sendable {
        static let key: Int64 = 0x6365_7274_726F_7402
        let endpoint: Endpoint
        /// The connection, and whether its session holds the lock.
        private let state = Mutex<(connection: PostgresConnection?, held: Bool)>((nil, false))

        init(_ endpoint: Endpoint) { self.endpoint = endpoint }

        func hold() -> Bool {
            state.withLock { state in
                do {
                    let connection = try endpoint.open(state.connection, id: 2)
                    if connection !== state.connection { state.held = false }  // a new session holds nothing
                    state.connection = connection
                    if state.held {
                        // Still ours while the session answers.
                        _ = try connection.query("SELECT 1", logger: endpoint.logger).wait()
                        return true
                    }
                    let rows = try connection.query(
                        "SELECT pg_try_advisory_lock(\(Self.key)) AS held", logger: endpoint.logger
                    ).wait().rows
                    state.held = try rows.first?.makeRandomAccess()["held"].decode(Bool.self) ?? false
                    return state.held
                } catch {
                    endpoint.logger.warning(
                        "leadership check failed; not leading", metadata: ["error": "\(String(reflecting: error))"])
                    try? state.connection?.close().wait()
                    state = (nil, false)
                    return false
                }
            }
        }

        func close() {
            state.withLock { state in
                try? state.connection?.close().wait()
                state = (nil, false)
            }
        }
    }

    // MARK: Migrations

    /// Versioned like SQLite's (same names); each applied once, in order, recorded in `certrot_migrations`.
    static let migrations: [(name: String, statements: [String])] = [
        (
            "v1",
            [
                """
                CREATE TABLE devices (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    first_seen BIGINT NOT NULL,
                    last_seen BIGINT NOT NULL,
                    inventory BYTEA,
                    keys TEXT,
                    issued_seq BIGINT NOT NULL DEFAULT 0
                )
                """,
                """
                CREATE TABLE rotations (
                    device TEXT COLLATE "C" NOT NULL,
                    target TEXT COLLATE "C" NOT NULL,
                    sha256 TEXT NOT NULL,
                    state TEXT NOT NULL,
                    attempts BIGINT NOT NULL DEFAULT 0,
                    jti TEXT,
                    seq BIGINT,
                    last_error TEXT,
                    next_attempt_at BIGINT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    issued_at BIGINT,
                    sent_at BIGINT,
                    applied_at BIGINT,
                    verified_at BIGINT,
                    resends BIGINT NOT NULL DEFAULT 0,
                    PRIMARY KEY (device, target)
                )
                """,
                "CREATE INDEX rotations_jti ON rotations(jti)",
                "CREATE INDEX rotations_next_attempt ON rotations(next_attempt_at) WHERE next_attempt_at IS NOT NULL",
                """
                CREATE INDEX rotations_in_flight ON rotations(state, sent_at, issued_at)
                    WHERE jti IS NOT NULL AND state IN ('pending', 'sent')
                """,
                """
                CREATE TABLE bundles (
                    jti TEXT PRIMARY KEY,
                    device TEXT COLLATE "C" NOT NULL,
                    seq BIGINT NOT NULL,
                    iat BIGINT NOT NULL,
                    exp BIGINT NOT NULL,
                    jws TEXT NOT NULL,
                    max_message BIGINT NOT NULL,
                    UNIQUE (device, seq)
                )
                """,
                """
                CREATE TABLE history (
                    id BIGSERIAL PRIMARY KEY,
                    device TEXT COLLATE "C" NOT NULL,
                    target TEXT NOT NULL,
                    at BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    jti TEXT,
                    detail TEXT
                )
                """,
                "CREATE INDEX history_device ON history(device, id)",
                "CREATE TABLE operator_requests (jti TEXT PRIMARY KEY, at BIGINT NOT NULL)",
            ]
        ),
        (
            "v2-expiry",
            [
                """
                CREATE TABLE expiry (
                    device TEXT COLLATE "C" NOT NULL,
                    target TEXT COLLATE "C" NOT NULL,
                    not_after BIGINT,
                    PRIMARY KEY (device, target)
                )
                """
            ]
        ),
        (
            "v3-campaigns",
            [
                """
                CREATE TABLE campaigns (
                    id TEXT COLLATE "C" PRIMARY KEY,
                    name TEXT NOT NULL,
                    state TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    body BYTEA NOT NULL
                )
                """,
                """
                CREATE TABLE campaign_members (
                    campaign TEXT COLLATE "C" NOT NULL,
                    device TEXT COLLATE "C" NOT NULL,
                    wave BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    settled BIGINT NOT NULL DEFAULT 0,
                    reason TEXT,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (campaign, device)
                )
                """,
                "CREATE INDEX campaign_members_device ON campaign_members(device)",
                "CREATE INDEX campaign_members_state ON campaign_members(campaign, state, wave)",
            ]
        ),
        (
            "v4-cluster",
            [
                "ALTER TABLE rotations ADD COLUMN issued_by TEXT",
                "CREATE TABLE replicas (id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL)",
            ]
        ),
        // SQLite's v5 also keeps rotation counts by trigger; here replicas write rotations concurrently, and
        // counter rows would serialise (and deadlock) their transactions, so fleet.status counts with GROUP BY.
        (
            "v5-counts",
            [
                "CREATE INDEX expiry_target_not_after ON expiry(target, not_after)",
                // The replicas' claim on outbound work (claimAwaitingBundle).
                "CREATE INDEX rotations_awaiting_bundle ON rotations(updated_at) WHERE state = 'pending' AND jti IS NULL",
                "CREATE INDEX campaign_members_state_device ON campaign_members(campaign, state, device)",
            ]
        ),
    ]

    /// An arbitrary constant naming certrot's migration lock among the database's advisory locks.
    static let migrationLock: Int64 = 0x6365_7274_726F_7401

    static func migrate(_ tx: PostgresTransaction) throws {
        try tx.execute("SELECT pg_advisory_xact_lock(\(migrationLock))")
        try tx.execute(
            "CREATE TABLE IF NOT EXISTS certrot_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        let applied = Set(
            try tx.query("SELECT name FROM certrot_migrations").map { try $0["name"].decode(String.self) })
        let known = Set(migrations.map(\.name))
        if let unknown = applied.subtracting(known).sorted().first {
            throw StoreError("the database has migration '\(unknown)', newer than this certrot: upgrade certrot")
        }
        for migration in migrations where !applied.contains(migration.name) {
            for statement in migration.statements { try tx.execute(PostgresQuery(unsafeSQL: statement)) }
            let now = Int64(Date().timeIntervalSince1970)
            try tx.execute("INSERT INTO certrot_migrations (name, applied_at) VALUES (\(migration.name), \(now))")
        }
    }
}

public struct StoreError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

struct PostgresTransaction: StoreTransaction {
    let connection: PostgresConnection
    let logger: Logger
    let inventories: StoredInventories

    @discardableResult
    func execute(_ query: PostgresQuery) throws -> PostgresQueryResult {
        try connection.query(query, logger: logger).wait()
    }

    func query(_ query: PostgresQuery) throws -> [PostgresRandomAccessRow] {
        try execute(query).rows.map { $0.makeRandomAccess() }
    }

    func device(_ id: String) throws -> DeviceRecord? {
        try query("SELECT * FROM devices WHERE id = \(id)").first.map(device(from:))
    }

    func saveDevice(_ device: DeviceRecord) throws {
        let inventory = device.inventory.map { ByteBuffer(bytes: inventories.encode(device: device.id, $0)) }
        let keys = device.inventory?.keys.map { "," + $0.joined(separator: ",") + "," }
        try execute(
            """
            INSERT INTO devices (id, first_seen, last_seen, inventory, keys, issued_seq)
            VALUES (\(device.id), \(device.firstSeen), \(device.lastSeen), \(inventory), \(keys), \(device.issuedSeq))
            ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, inventory = excluded.inventory,
                keys = excluded.keys, issued_seq = excluded.issued_seq
            """)
    }

    func rotations(device: String) throws -> [Rotation] {
        try query("SELECT * FROM rotations WHERE device = \(device) ORDER BY target").map(Self.rotation(from:))
    }

    func rotations(jti: String) throws -> [Rotation] {
        try query("SELECT * FROM rotations WHERE jti = \(jti)").map(Self.rotation(from:))
    }

    func saveRotation(_ r: Rotation) throws {
        try execute(
            """
            INSERT INTO rotations (\(unescaped: RotationSQL.columns))
            VALUES (\(r.device), \(r.target.description), \(r.sha256), \(r.state.rawValue), \(r.attempts), \(r.jti), \(r.seq),
                \(r.lastError), \(r.nextAttemptAt), \(r.createdAt), \(r.updatedAt), \(r.issuedAt), \(r.sentAt),
                \(r.appliedAt), \(r.verifiedAt), \(r.resends), \(r.issuedBy))
            \(unescaped: RotationSQL.onConflictUpdate)
            """)
    }

    func insertBundle(_ b: BundleRecord) throws {
        try execute(
            """
            INSERT INTO bundles (jti, device, seq, iat, exp, jws, max_message)
            VALUES (\(b.jti), \(b.device), \(b.seq), \(b.iat), \(b.exp), \(b.jws), \(b.maxMessage))
            """)
    }

    func bundle(jti: String) throws -> BundleRecord? {
        guard let row = try query("SELECT * FROM bundles WHERE jti = \(jti)").first else { return nil }
        return BundleRecord(
            jti: try row["jti"].decode(String.self), device: try row["device"].decode(String.self),
            seq: try row["seq"].decode(Int64.self), iat: try row["iat"].decode(Int64.self),
            exp: try row["exp"].decode(Int64.self), jws: try row["jws"].decode(String.self),
            maxMessage: try row["max_message"].decode(Int.self))
    }

    func appendHistory(device: String, entry: HistoryEntry) throws {
        try execute(
            """
            INSERT INTO history (device, target, at, state, jti, detail)
            VALUES (\(device), \(entry.target), \(entry.at), \(entry.state), \(entry.jti), \(entry.detail))
            """)
    }

    func prune(device: String, keepHistory: Int, keepBundles: Int) throws {
        try execute(
            """
            DELETE FROM history WHERE device = \(device)
                AND id < (SELECT id FROM history WHERE device = \(device) ORDER BY id DESC LIMIT 1 OFFSET \(keepHistory - 1))
            """)
        try execute(
            """
            DELETE FROM bundles WHERE device = \(device)
                AND seq < (SELECT seq FROM bundles WHERE device = \(device) ORDER BY seq DESC LIMIT 1 OFFSET \(keepBundles - 1))
                AND NOT EXISTS (SELECT 1 FROM rotations WHERE rotations.jti = bundles.jti)
            """)
    }

    func prune(before: Int64, limit: Int) throws -> Int {
        let history = try query(
            """
            DELETE FROM history WHERE id IN
                (SELECT id FROM (SELECT id, at FROM history ORDER BY id LIMIT \(limit)) AS oldest WHERE at < \(before))
            RETURNING id
            """)
        let bundles = try query(
            """
            DELETE FROM bundles WHERE jti IN (SELECT jti FROM bundles WHERE exp < \(before)
                AND NOT EXISTS (SELECT 1 FROM rotations WHERE rotations.jti = bundles.jti) LIMIT \(limit))
            RETURNING jti
            """)
        return history.count + bundles.count
    }

    func history(device: String, limit: Int) throws -> [HistoryEntry] {
        try query("SELECT * FROM history WHERE device = \(device) ORDER BY id DESC LIMIT \(limit)").reversed().map {
            HistoryEntry(
                at: try $0["at"].decode(Int64.self), target: try $0["target"].decode(String.self),
                state: try $0["state"].decode(String.self), jti: try $0["jti"].decode(String?.self),
                detail: try $0["detail"].decode(String?.self))
        }
    }

    func rotationsNeedingTick(now: Int64, ackTimeout: Int64, limit: Int) throws -> [Rotation] {
        let cutoff = now - ackTimeout
        return try query(
            """
            (SELECT * FROM rotations WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= \(now))
            UNION ALL
            (SELECT * FROM rotations WHERE jti IS NOT NULL AND state IN ('pending', 'sent')
                AND COALESCE(sent_at, issued_at) <= \(cutoff))
            LIMIT \(limit)
            """
        ).map(Self.rotation(from:))
    }

    func rotationsAwaitingDelivery(issuedBy replica: String?) throws -> [Rotation] {
        guard let replica else {
            return try query("SELECT * FROM rotations WHERE state = 'pending' AND jti IS NOT NULL").map(
                Self.rotation(from:))
        }
        return try query(
            "SELECT * FROM rotations WHERE state = 'pending' AND jti IS NOT NULL AND issued_by = \(replica)"
        )
        .map(Self.rotation(from:))
    }

    func rotationCounts() throws -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for row in try query("SELECT target, state, COUNT(*) AS n FROM rotations GROUP BY target, state") {
            counts[try row["target"].decode(String.self), default: [:]][try row["state"].decode(String.self)] =
                try row["n"].decode(Int.self)
        }
        return counts
    }

    func deviceCount() throws -> Int {
        try query("SELECT COUNT(*) AS n FROM devices").first?["n"].decode(Int.self) ?? 0
    }

    func rememberRequest(jti: String, at: Int64, forgetBefore: Int64) throws -> Bool {
        try execute("DELETE FROM operator_requests WHERE at < \(forgetBefore)")
        let result = try execute(
            "INSERT INTO operator_requests (jti, at) VALUES (\(jti), \(at)) ON CONFLICT DO NOTHING")
        return result.metadata.rows == 1
    }

    func saveExpiry(device: String, target: String, notAfter: Int64?) throws {
        try execute(
            """
            INSERT INTO expiry (device, target, not_after) VALUES (\(device), \(target), \(notAfter))
            ON CONFLICT (device, target) DO UPDATE SET not_after = excluded.not_after
            """)
    }

    func expiryHistogram(limits: [Int64]) throws -> [String: [Int]] {
        var binds = PostgresBindings()
        var columns: [String] = []
        for (index, limit) in limits.enumerated() {
            binds.append(limit)
            columns.append("COUNT(*) FILTER (WHERE not_after < $\(index + 1)) AS l\(index)")
        }
        columns.append("COUNT(*) AS total")
        let sql =
            "SELECT target, \(columns.joined(separator: ", ")) FROM expiry WHERE not_after IS NOT NULL GROUP BY target"
        var result: [String: [Int]] = [:]
        for row in try query(PostgresQuery(unsafeSQL: sql, binds: binds)) {
            result[try row["target"].decode(String.self)] =
                try (0..<limits.count).map { try row["l\($0)"].decode(Int.self) } + [row["total"].decode(Int.self)]
        }
        return result
    }

    func deviceCount(trustingKey kid: String) throws -> Int {
        // strpos, not LIKE: kids are base64url and may contain '_', a LIKE wildcard.
        try query("SELECT COUNT(*) AS n FROM devices WHERE strpos(keys, ',' || \(kid) || ',') > 0").first?["n"]
            .decode(Int.self) ?? 0
    }

    func devices(after: String?, limit: Int) throws -> [DeviceRecord] {
        try query("SELECT * FROM devices WHERE id > \(after ?? "") ORDER BY id LIMIT \(limit)").map(device(from:))
    }

    func saveCampaign(_ campaign: Campaign) throws {
        let body = ByteBuffer(data: try JSONEncoder().encode(campaign))
        try execute(
            """
            INSERT INTO campaigns (id, name, state, created_at, body)
            VALUES (\(campaign.id), \(campaign.name), \(campaign.state.rawValue), \(campaign.createdAt), \(body))
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, state = excluded.state,
                created_at = excluded.created_at, body = excluded.body
            """)
    }

    func campaigns() throws -> [Campaign] {
        try query("SELECT body FROM campaigns ORDER BY created_at, id").map { row in
            var body = try row["body"].decode(ByteBuffer.self)
            return try JSONDecoder().decode(Campaign.self, from: Data(body.readBytes(length: body.readableBytes) ?? []))
        }
    }

    func saveMember(_ m: CampaignMember) throws {
        let settled = m.settled ? 1 : 0
        try execute(
            """
            INSERT INTO campaign_members (campaign, device, wave, state, settled, reason, updated_at)
            VALUES (\(m.campaign), \(m.device), \(m.wave), \(m.state.rawValue), \(settled), \(m.reason), \(m.updatedAt))
            ON CONFLICT (campaign, device) DO UPDATE SET wave = excluded.wave, state = excluded.state,
                settled = excluded.settled, reason = excluded.reason, updated_at = excluded.updated_at
            """)
    }

    func member(campaign: String, device: String) throws -> CampaignMember? {
        try query("SELECT * FROM campaign_members WHERE campaign = \(campaign) AND device = \(device)").first
            .map(Self.member(from:))
    }

    func memberships(device: String) throws -> [CampaignMember] {
        try query("SELECT * FROM campaign_members WHERE device = \(device)").map(Self.member(from:))
    }

    func members(
        campaign: String, maxWave: Int?, state: MemberState?, after: String?, limit: Int
    ) throws -> [CampaignMember] {
        var binds = PostgresBindings()
        binds.append(campaign)
        binds.append(after ?? "")
        var sql = "SELECT * FROM campaign_members WHERE campaign = $1 AND device > $2"
        if let state {
            binds.append(state.rawValue)
            sql += " AND state = $\(binds.count)"
        }
        if let maxWave {
            binds.append(maxWave)
            sql += " AND wave <= $\(binds.count)"
        }
        binds.append(limit)
        sql += " ORDER BY device LIMIT $\(binds.count)"
        return try query(PostgresQuery(unsafeSQL: sql, binds: binds)).map(Self.member(from:))
    }

    func memberCounts(campaign: String) throws -> [Int: WaveCounts] {
        var counts: [Int: WaveCounts] = [:]
        for row in try query(
            """
            SELECT wave, state, COUNT(*) AS n, SUM(settled)::BIGINT AS s FROM campaign_members
            WHERE campaign = \(campaign) GROUP BY wave, state
            """)
        {
            guard let state = MemberState(rawValue: try row["state"].decode(String.self)) else { continue }
            let wave = try row["wave"].decode(Int.self)
            counts[wave, default: WaveCounts()].states[state] = try row["n"].decode(Int.self)
            counts[wave, default: WaveCounts()].settled += try row["s"].decode(Int?.self) ?? 0
        }
        return counts
    }

    func lockDevice(_ device: String) throws {
        // A transaction-scoped advisory lock: released at COMMIT or ROLLBACK, also for a device with no row yet.
        try execute("SELECT pg_advisory_xact_lock(hashtextextended(\("device:" + device), 0))")
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

    static func member(from row: PostgresRandomAccessRow) throws -> CampaignMember {
        CampaignMember(
            campaign: try row["campaign"].decode(String.self), device: try row["device"].decode(String.self),
            wave: try row["wave"].decode(Int.self),
            state: MemberState(rawValue: try row["state"].decode(String.self)) ?? .pending,
            settled: try row["settled"].decode(Int.self) != 0, reason: try row["reason"].decode(String?.self),
            updatedAt: try row["updated_at"].decode(Int64.self))
    }

    func device(from row: PostgresRandomAccessRow) throws -> DeviceRecord {
        let id = try row["id"].decode(String.self)
        let inventory = try row["inventory"].decode(ByteBuffer?.self).flatMap { buffer in
            inventories.decode(device: id, bytes: Array(buffer.readableBytesView))
        }
        return DeviceRecord(
            id: id, firstSeen: try row["first_seen"].decode(Int64.self),
            lastSeen: try row["last_seen"].decode(Int64.self), inventory: inventory,
            issuedSeq: try row["issued_seq"].decode(Int64.self))
    }

    static func rotation(from row: PostgresRandomAccessRow) throws -> Rotation {
        var r = Rotation(
            device: try row["device"].decode(String.self),
            target: RotationTarget(try row["target"].decode(String.self)),
            sha256: try row["sha256"].decode(String.self),
            state: RotationState(rawValue: try row["state"].decode(String.self)) ?? .pending,
            now: try row["created_at"].decode(Int64.self))
        r.attempts = try row["attempts"].decode(Int.self)
        r.jti = try row["jti"].decode(String?.self)
        r.seq = try row["seq"].decode(Int64?.self)
        r.lastError = try row["last_error"].decode(String?.self)
        r.nextAttemptAt = try row["next_attempt_at"].decode(Int64?.self)
        r.updatedAt = try row["updated_at"].decode(Int64.self)
        r.issuedAt = try row["issued_at"].decode(Int64?.self)
        r.sentAt = try row["sent_at"].decode(Int64?.self)
        r.appliedAt = try row["applied_at"].decode(Int64?.self)
        r.verifiedAt = try row["verified_at"].decode(Int64?.self)
        r.resends = try row["resends"].decode(Int.self)
        r.issuedBy = try row["issued_by"].decode(String?.self)
        return r
    }
}

/// Opens the store a config's `store:` URL names: `sqlite:PATH` or `postgres://…`.
public func openStore(url: String) throws -> any RotationStore {
    if let path = SQLiteStore.path(fromURL: url) { return try SQLiteStore(path: path) }
    try validateStoreURL(url)
    return try PostgresStore(url: url)
}

/// Checks a `store:` URL's form without opening it (`certrot config check`).
public func validateStoreURL(_ url: String) throws {
    if SQLiteStore.path(fromURL: url) != nil { return }
    guard PostgresStore.isURL(url) else {
        throw StoreError("'\(url)' is neither sqlite:PATH nor postgres://user@host/database")
    }
    _ = try PostgresStore.configuration(fromURL: url)
}

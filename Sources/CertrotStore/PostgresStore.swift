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
/// statement waits on postgres-nio's future. The connections run on event loops of their own (two threads), never
/// on a caller's thread, so the wait cannot deadlock the loop it waits for. One connection writes, one reads, one reads
/// for background work (``readAside(_:)``, opened on first use) and one holds the cluster leadership; each is used
/// by one caller at a time and reopened when it was lost.
public final class PostgresStore: RotationStore {
    private let group: MultiThreadedEventLoopGroup
    private let writer: Slot
    private let reader: Slot
    private let sideReader: Slot
    private let leadership: Leadership
    /// Statements, waits, rows and transactions of this store's connections since it opened.
    public let statistics: PostgresStatistics

    /// Connects to `url` (`postgres://user[:password]@host[:port]/database[?sslmode=disable|require]`) and
    /// migrates the database to the current schema (under an advisory lock, so replicas starting together apply
    /// each migration once).
    ///
    /// `sessionTimeout`: seconds after which the server ends this store's session when it sits idle inside a
    /// transaction, and the leadership's session when it sits idle (PostgreSQL 14 or newer) — a replica's
    /// `deadAfter`: a replica paused longer (SIGSTOP, a VM migration, a stalled disk) then holds no device lock and
    /// no leadership, and another replica takes over; when it resumes, its fenced transactions fail (``fence()``).
    /// `applicationName`: the sessions' `application_name`.
    public init(
        url: String, logger: Logger = Logger(label: "certrot.store.postgres"), sessionTimeout: Int64? = nil,
        applicationName: String = "certrot"
    ) throws {
        var configuration = try Self.configuration(fromURL: url)
        // What pg_stat_activity shows for this process's sessions (a replica's name, in a cluster).
        configuration.options.additionalStartupParameters.append(("application_name", applicationName))
        if let sessionTimeout {
            configuration.options.additionalStartupParameters.append(
                ("idle_in_transaction_session_timeout", "\(sessionTimeout * 1000)"))
        }
        // Two threads: the writes' connections on one, the reads' on the other, so that a status read's answer is
        // not parsed behind a write batch's.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        self.group = group
        let statistics = PostgresStatistics()
        self.statistics = statistics
        let endpoint = Endpoint(
            configuration: configuration, eventLoop: group.next(), logger: logger, inventories: StoredInventories(),
            statistics: statistics)
        var reading = endpoint
        reading.eventLoop = group.next()
        writer = Slot(endpoint)
        reader = Slot(reading)
        sideReader = Slot(reading)
        var leading = endpoint
        if let sessionTimeout {
            leading.configuration.options.additionalStartupParameters += [
                ("idle_session_timeout", "\(sessionTimeout * 1000)"),
                // Taking the leadership waits for the old leader's fenced transactions; not for ever.
                ("lock_timeout", "1000"),
            ]
        }
        leadership = Leadership(leading)
        do {
            try writer.transaction(readOnly: false, epoch: nil) { tx in try Self.migrate(tx) }
        } catch {
            writer.close()
            reader.close()
            sideReader.close()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    deinit {
        writer.close()
        reader.close()
        sideReader.close()
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
        sideReader.close()
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
        do {
            return try writer.transaction(readOnly: false, epoch: leadership.epoch, body)
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.fencedState {
            leadership.lost()
            throw LeadershipLost(error.serverInfo?[.message] ?? "another replica took the leadership")
        }
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try reader.transaction(readOnly: true, epoch: nil, body)
    }

    public func readAside<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try sideReader.transaction(readOnly: true, epoch: nil, body)
    }

    /// The SQLSTATE `certrot_fence` raises.
    static let fencedState = "CR001"

    public var traffic: [String: Int] {
        [
            "statements": statistics.statements.load(ordering: .relaxed),
            "round_trips": statistics.waits.load(ordering: .relaxed),
            "rows_written": statistics.rows.load(ordering: .relaxed),
            "transactions": statistics.transactions.load(ordering: .relaxed),
            "devices_prefetched": statistics.prefetched.load(ordering: .relaxed),
        ]
    }

    /// The leadership epoch this process took, while it holds the leadership.
    public var leadershipEpoch: Int64? { leadership.epoch }

    /// Where the store's connections go; they all run on the store's own event loop.
    struct Endpoint: Sendable {
        var configuration: PostgresConnection.Configuration
        var eventLoop: any EventLoop
        let logger: Logger
        let inventories: StoredInventories
        let statistics: PostgresStatistics

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

        func transaction<T>(readOnly: Bool, epoch: Int64?, _ body: (PostgresTransaction) throws -> T) throws -> T {
            try connection.withLock { held in
                let open: PostgresConnection
                do {
                    open = try endpoint.open(held, id: 1)
                } catch {
                    throw StoreUnavailable("cannot connect to PostgreSQL: \(String(reflecting: error))")
                }
                held = open
                let tx = PostgresTransaction(
                    connection: open, logger: endpoint.logger, inventories: endpoint.inventories,
                    statistics: endpoint.statistics, epoch: epoch)
                do {
                    tx.begin(readOnly: readOnly)
                    let result = try body(tx)
                    if readOnly { try tx.endReadOnly() } else { try tx.commit() }
                    return result
                } catch {
                    if !tx.rollback() {
                        // The connection is unusable: open a new one next time. What failed was the connection,
                        // not the transaction's work.
                        try? open.close().wait()
                        held = nil
                        if !(error is LeadershipLost) {
                            throw StoreUnavailable("the PostgreSQL connection failed: \(String(reflecting: error))")
                        }
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
    /// while that session lives; when the process dies, or pauses for longer than the session timeout, PostgreSQL
    /// ends the session and the lock is free for another replica. Checked (and taken when free) on every call.
    ///
    /// Taking it bumps the epoch in the `leadership` row; the leader's write transactions are fenced with the
    /// epoch it took (``PostgresTransaction/fence()``), so that once another replica has taken over, a former
    /// leader that has not noticed yet cannot commit a leader's decision.
    final class Leadership: Sendable {
        static let key: Int64 = 0x6365_7274_726F_7402
        let endpoint: Endpoint
        /// The connection, whether its session holds the lock, and the epoch taken with it.
        private let state = Mutex<(connection: PostgresConnection?, held: Bool, epoch: Int64?)>((nil, false, nil))

        init(_ endpoint: Endpoint) { self.endpoint = endpoint }

        var epoch: Int64? { state.withLock { $0.held ? $0.epoch : nil } }

        func hold() -> Bool {
            state.withLock { state in
                do {
                    let connection = try endpoint.open(state.connection, id: 2)
                    // A new session holds nothing.
                    if connection !== state.connection { (state.held, state.epoch) = (false, nil) }
                    state.connection = connection
                    if state.held {
                        // Still ours while the session answers.
                        _ = try connection.query("SELECT 1", logger: endpoint.logger).answer(on: connection)
                        return true
                    }
                    let rows = try connection.query(
                        "SELECT pg_try_advisory_lock(\(Self.key)) AS held", logger: endpoint.logger
                    ).answer(on: connection).rows
                    guard try rows.first?.makeRandomAccess()["held"].decode(Bool.self) == true else { return false }
                    do {
                        // Waits for the former leader's fenced transactions to end (lock_timeout bounds the wait).
                        let epoch = try connection.query(
                            "UPDATE leadership SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
                            logger: endpoint.logger
                        ).answer(on: connection).rows.first?.makeRandomAccess()["epoch"].decode(Int64.self)
                        guard let epoch else { throw StoreError("the leadership row is missing") }
                        (state.held, state.epoch) = (true, epoch)
                        return true
                    } catch {
                        _ = try? connection.query("SELECT pg_advisory_unlock(\(Self.key))", logger: endpoint.logger)
                            .answer(on: connection)
                        throw error
                    }
                } catch {
                    endpoint.logger.warning(
                        "leadership check failed; not leading", metadata: ["error": "\(String(reflecting: error))"])
                    try? state.connection?.close().wait()
                    state = (nil, false, nil)
                    return false
                }
            }
        }

        /// A fenced transaction failed: the epoch moved, so another replica leads. The session (if it still lives)
        /// gives the lock up; the next check starts afresh.
        func lost() {
            state.withLock { state in
                try? state.connection?.close().wait()
                state = (nil, false, nil)
            }
        }

        /// Gives the lock up explicitly before the session ends: the server frees it at that statement, whereas a
        /// closed connection frees it only once its backend has exited, which a busy server may take seconds to do
        /// (a daemon restarted at once then found the lock still held).
        func close() {
            state.withLock { state in
                if state.held, let connection = state.connection {
                    _ = try? connection.query("SELECT pg_advisory_unlock(\(Self.key))", logger: endpoint.logger)
                        .answer(on: connection)
                }
                try? state.connection?.close().wait()
                state = (nil, false, nil)
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
        (
            "v6-client-certs",
            [
                """
                CREATE TABLE issued_certs (
                    issuer TEXT COLLATE "C" NOT NULL,
                    serial TEXT COLLATE "C" NOT NULL,
                    device TEXT COLLATE "C" NOT NULL,
                    policy TEXT NOT NULL,
                    tag BIGINT NOT NULL,
                    keygen_jti TEXT NOT NULL UNIQUE,
                    sha256 TEXT NOT NULL,
                    pem TEXT NOT NULL,
                    not_before BIGINT NOT NULL,
                    not_after BIGINT NOT NULL,
                    issued_at BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    revoked_at BIGINT,
                    PRIMARY KEY (issuer, serial)
                )
                """,
                "CREATE INDEX issued_certs_device ON issued_certs(device, issued_at)",
                "CREATE INDEX issued_certs_revoked ON issued_certs(issuer, serial) WHERE state = 'revoked'",
                "CREATE INDEX rotations_awaiting_csr ON rotations(applied_at) WHERE state = 'applied' AND sha256 = ''",
            ]
        ),
        (
            "v7-audit",
            [
                """
                CREATE TABLE audit (
                    seq BIGINT PRIMARY KEY,
                    at BIGINT NOT NULL,
                    kind TEXT NOT NULL,
                    device TEXT COLLATE "C",
                    subject TEXT,
                    body TEXT NOT NULL,
                    prev TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    signature TEXT
                )
                """,
                "CREATE INDEX audit_device ON audit(device, seq) WHERE device IS NOT NULL",
            ]
        ),
        // PostgreSQL's alone: one process owns a SQLite store, so it needs no fencing.
        (
            "v8-fencing",
            [
                "CREATE TABLE leadership (id INT PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL)",
                "INSERT INTO leadership (id, epoch) VALUES (1, 0)",
                """
                CREATE FUNCTION certrot_fence(expected BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM 1 FROM leadership WHERE id = 1 AND epoch = expected FOR SHARE;
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'leadership epoch % is no longer current: another replica took the leadership',
                            expected USING ERRCODE = 'CR001';
                    END IF;
                END
                $$
                """,
            ]
        ),
        (
            "v9-learned-identities",
            [
                """
                CREATE TABLE learned_identities (
                    device TEXT COLLATE "C" PRIMARY KEY,
                    uuid TEXT NOT NULL,
                    candidates TEXT NOT NULL,
                    first_seen_at BIGINT NOT NULL,
                    pinned_at BIGINT
                )
                """
            ]
        ),
        (
            "v10-issuance-budget",
            [
                "CREATE INDEX issued_certs_issued_at ON issued_certs (issued_at)",
                "CREATE INDEX issued_certs_not_after ON issued_certs (not_after)",
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

/// What a ``PostgresStore`` sent: statements, how often a caller waited for answers (a round trip, however many
/// statements it covered), rows written through ``PendingWrites``, transactions committed, and devices read ahead.
public final class PostgresStatistics: Sendable {
    public let statements = Atomic<Int>(0)
    public let waits = Atomic<Int>(0)
    public let rows = Atomic<Int>(0)
    public let transactions = Atomic<Int>(0)
    public let prefetched = Atomic<Int>(0)

    public init() {}
}

public struct StoreError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

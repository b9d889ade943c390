import CertrotCore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// One transaction on one connection. Statements are sent as they come and waited for only when their answer is
/// needed: a read, or COMMIT. postgres-nio runs a connection's statements in the order they were sent, so a read
/// sees every write before it, and the caller's thread is not woken for each write. The writes the engine makes
/// on every message (devices, rotations, history, bundles, campaign members, expiry, audit) are kept in
/// ``PendingWrites`` and sent as one statement before the next statement that could read them; the reads the
/// engine makes of one device (its record, rotations, bundles, memberships) are answered from the database with
/// those kept rows laid over, so they need no flush. Errors of a statement not waited for surface at the next
/// wait, and fail the transaction as they would have at once.
final class PostgresTransaction: StoreTransaction {
    let connection: PostgresConnection
    let logger: Logger
    let inventories: StoredInventories
    let statistics: PostgresStatistics?
    /// The leadership epoch this process took, if it holds the leadership (``fence()``).
    let epoch: Int64?
    private var inFlight: [EventLoopFuture<PostgresQueryResult>] = []
    var pending = PendingWrites()
    /// The audit log's head once this transaction holds the log's lock (it is held until the transaction ends).
    var auditHead: AuditRecord??
    /// The rows of the devices this transaction holds locked (``prefetch(devices:)``), as it sees them: read once,
    /// then kept up to date with what it writes. No other transaction writes a locked device's rows.
    var held: [DeviceKey: Held] = [:]

    struct Held {
        var record: DeviceRecord?
        /// In target order.
        var rotations: [Rotation] = []
        var memberships: [CampaignMember] = []
    }

    init(
        connection: PostgresConnection, logger: Logger, inventories: StoredInventories,
        statistics: PostgresStatistics? = nil, epoch: Int64? = nil
    ) {
        self.epoch = epoch
        self.connection = connection
        self.logger = logger
        self.inventories = inventories
        self.statistics = statistics
    }

    /// A read transaction's BEGIN, until its first statement: sent just before it, so that a read that needs no
    /// statement (a status answered from memory) costs none, and one that needs one statement (``deviceView``)
    /// costs that statement alone.
    private var unbegun: PostgresQuery?

    /// Sends `query` without waiting for it (after the read transaction's BEGIN, if it has not been sent).
    func send(_ query: PostgresQuery) {
        if let begin = unbegun {
            unbegun = nil
            sendAlone(begin)
        }
        sendAlone(query)
    }

    /// Sends `query` without waiting for it, and without beginning the read transaction.
    private func sendAlone(_ query: PostgresQuery) {
        statistics?.statements.add(1, ordering: .relaxed)
        inFlight.append(connection.query(query, logger: logger))
    }

    /// Sends what ``PendingWrites`` holds (and keeps the held devices' rows up to date with it).
    private func flush() {
        guard !pending.isEmpty else { return }
        statistics?.rows.add(pending.rows, ordering: .relaxed)
        for (key, device) in pending.devices where held[key] != nil { held[key]?.record = device }
        for rotation in pending.rotations.values {
            let key = DeviceKey(rotation.device)
            guard let rotations = held[key]?.rotations else { continue }
            held[key]?.rotations = Self.laid([rotation], over: rotations)
        }
        for member in pending.members.values {
            let key = DeviceKey(member.device)
            guard let memberships = held[key]?.memberships else { continue }
            held[key]?.memberships = Self.laid(member, over: memberships)
        }
        for statement in pending.statements(inventories: inventories) { send(statement) }
        pending = PendingWrites()
    }

    /// Waits for every statement sent; the first error, if any, is thrown (the transaction is then aborted, and
    /// the statements after it failed too). Returns the last one's result.
    @discardableResult
    private func settle() throws -> PostgresQueryResult? {
        let futures = inFlight
        inFlight = []
        statistics?.waits.add(1, ordering: .relaxed)
        var failure: (any Error)?
        var last: PostgresQueryResult?
        for future in futures {
            do {
                last = try wait(for: future)
            } catch {
                if failure == nil { failure = error }
            }
        }
        if let failure { throw failure }
        return last
    }

    private func wait(for future: EventLoopFuture<PostgresQueryResult>) throws -> PostgresQueryResult {
        try future.answer(on: connection)
    }

    /// Runs `query` after every write kept, and waits for it.
    @discardableResult
    func execute(_ query: PostgresQuery) throws -> PostgresQueryResult {
        flush()
        return try reading(query)
    }

    func query(_ query: PostgresQuery) throws -> [PostgresRandomAccessRow] {
        try execute(query).rows.map { $0.makeRandomAccess() }
    }

    /// Runs `query` without sending the kept writes first (they cannot change its answer) and waits for it.
    private func reading(_ query: PostgresQuery) throws -> PostgresQueryResult {
        send(query)
        return try settle()!
    }

    func rows(_ query: PostgresQuery) throws -> [PostgresRandomAccessRow] {
        try reading(query).rows.map { $0.makeRandomAccess() }
    }

    func begin(readOnly: Bool) {
        if readOnly {
            unbegun = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            send("BEGIN")
        }
    }

    func commit() throws {
        flush()
        send("COMMIT")
        try settle()
        statistics?.transactions.add(1, ordering: .relaxed)
    }

    /// Ends a read-only transaction. When every statement it sent has been answered (the usual case: a read waits
    /// for its answer), COMMIT is sent and not waited for: it can change nothing, the connection runs it before
    /// the next transaction's BEGIN, and a connection that broke meanwhile fails that transaction instead. Else as
    /// ``commit()``.
    func endReadOnly() throws {
        guard inFlight.isEmpty, pending.isEmpty else { return try commit() }
        statistics?.transactions.add(1, ordering: .relaxed)
        guard unbegun == nil else { return }  // it sent no statement, or only ``deviceView``'s
        sendAlone("COMMIT")
        inFlight = []
    }

    /// Drops the kept writes and rolls back; false when the connection is unusable.
    func rollback() -> Bool {
        pending = PendingWrites()
        _ = try? settle()
        // A read that began no transaction has none to roll back.
        if unbegun != nil { return !connection.isClosed }
        send("ROLLBACK")
        return (try? settle()) != nil
    }

    func device(_ id: String) throws -> DeviceRecord? {
        if let kept = pending.devices[DeviceKey(id)] { return kept }
        if let held = held[DeviceKey(id)] { return held.record }
        return try rows("SELECT * FROM devices WHERE id = \(id)").first.map(device(from:))
    }

    /// One statement locks them all, in the database's order of their IDs (the same in every replica), and three
    /// more read their rows; one wait for the four.
    func prefetch(devices ids: [String]) throws {
        let wanted = Set(ids.map(DeviceKey.init)).filter { held[$0] == nil }.map(\.id)
        guard !wanted.isEmpty else { return }
        send(
            """
            SELECT COUNT(pg_advisory_xact_lock(hashtextextended('device:' || d, 0))) AS n
            FROM (SELECT d FROM unnest(\(wanted)::text[]) AS u(d) ORDER BY d) AS ordered
            """)
        let devices = sendForRows("SELECT * FROM devices WHERE id = ANY(\(wanted))")
        let rotations = sendForRows("SELECT * FROM rotations WHERE device = ANY(\(wanted)) ORDER BY device, target")
        let memberships = sendForRows("SELECT * FROM campaign_members WHERE device = ANY(\(wanted))")
        try settle()
        var fresh = Dictionary(uniqueKeysWithValues: wanted.map { (DeviceKey($0), Held()) })
        for row in try devices.wait().rows {
            let device = try device(from: row.makeRandomAccess())
            fresh[DeviceKey(device.id)]?.record = device
        }
        for row in try rotations.wait().rows {
            let rotation = try Self.rotation(from: row.makeRandomAccess())
            fresh[DeviceKey(rotation.device)]?.rotations.append(rotation)
        }
        for row in try memberships.wait().rows {
            let member = try Self.member(from: row.makeRandomAccess())
            fresh[DeviceKey(member.device)]?.memberships.append(member)
        }
        held.merge(fresh) { old, _ in old }
        statistics?.prefetched.add(wanted.count, ordering: .relaxed)
    }

    /// Sends `query` without waiting; its answer is the returned future's, once a wait has passed it.
    private func sendForRows(_ query: PostgresQuery) -> EventLoopFuture<PostgresQueryResult> {
        send(query)
        return inFlight[inFlight.count - 1]
    }

    /// `kept` replacing the rotations of the same target in `rotations`, the rest added, in target order.
    static func laid(_ kept: [Rotation], over rotations: [Rotation]) -> [Rotation] {
        var result = rotations
        for rotation in kept {
            if let index = result.firstIndex(where: {
                DeviceID.same($0.target.description, rotation.target.description)
            }) {
                result[index] = rotation
            } else {
                result.append(rotation)
            }
        }
        return result.sorted { PendingWrites.byteOrder($0.target.description, $1.target.description) }
    }

    /// `member` replacing the membership of the same campaign in `memberships`, or added.
    static func laid(_ member: CampaignMember, over memberships: [CampaignMember]) -> [CampaignMember] {
        var result = memberships
        if let index = result.firstIndex(where: { DeviceID.same($0.campaign, member.campaign) }) {
            result[index] = member
        } else {
            result.append(member)
        }
        return result
    }

    func saveDevice(_ device: DeviceRecord) throws {
        pending.devices[DeviceKey(device.id)] = device
    }

    func rotations(device: String) throws -> [Rotation] {
        let found =
            try held[DeviceKey(device)]?.rotations
            ?? rows("SELECT * FROM rotations WHERE device = \(device) ORDER BY target").map(Self.rotation(from:))
        let kept = pending.rotations.values.filter { DeviceID.same($0.device, device) }
        return kept.isEmpty ? found : Self.laid(kept, over: found)
    }

    func rotations(jti: String) throws -> [Rotation] {
        // A bundle is one device's: when a held device has a rotation with this jti, all of them are there.
        if let device = held.first(where: { entry in
            entry.value.rotations.contains { $0.jti == jti }
                || pending.rotations.values.contains { DeviceKey($0.device) == entry.key && $0.jti == jti }
        })?.key {
            return try rotations(device: device.id).filter { $0.jti == jti }
        }
        var found = try rows("SELECT * FROM rotations WHERE jti = \(jti)").map(Self.rotation(from:)).compactMap {
            stored -> Rotation? in
            guard let kept = pending.rotations[.init(device: stored.device, target: stored.target.description)] else {
                return stored
            }
            return kept.jti == jti ? kept : nil
        }
        for kept in pending.rotations.values where kept.jti == jti {
            let key = PendingWrites.RotationKey(device: kept.device, target: kept.target.description)
            if !found.contains(where: { .init(device: $0.device, target: $0.target.description) == key }) {
                found.append(kept)
            }
        }
        return found
    }

    func saveRotation(_ r: Rotation) throws {
        pending.rotations[.init(device: r.device, target: r.target.description)] = r
    }

    func insertBundle(_ b: BundleRecord) throws {
        pending.insertBundle(b)
    }

    func bundle(jti: String) throws -> BundleRecord? {
        if let kept = pending.bundle(jti: jti) { return kept }
        guard let row = try rows("SELECT * FROM bundles WHERE jti = \(jti)").first else { return nil }
        return BundleRecord(
            jti: try row["jti"].decode(String.self), device: try row["device"].decode(String.self),
            seq: try row["seq"].decode(Int64.self), iat: try row["iat"].decode(Int64.self),
            exp: try row["exp"].decode(Int64.self), jws: try row["jws"].decode(String.self),
            maxMessage: try row["max_message"].decode(Int.self))
    }

    func appendHistory(device: String, entry: HistoryEntry) throws {
        pending.history.append((device, entry))
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
        try query("SELECT * FROM history WHERE device = \(device) ORDER BY id DESC LIMIT \(limit)").reversed().map(
            Self.historyEntry(from:))
    }

    static func historyEntry(from row: PostgresRandomAccessRow) throws -> HistoryEntry {
        HistoryEntry(
            at: try row["at"].decode(Int64.self), target: try row["target"].decode(String.self),
            state: try row["state"].decode(String.self), jti: try row["jti"].decode(String?.self),
            detail: try row["detail"].decode(String?.self))
    }

    /// The four reads as one statement (``deviceViewQuery(_:historyLimit:issued:)``): a connection runs one
    /// statement at a time, each a round trip through a server process that, during a campaign on a loaded machine,
    /// waits for a core before it answers; a status call then waits for that once rather than six times (BEGIN, four
    /// reads, COMMIT). First in a read, it runs alone, without BEGIN: one statement sees one snapshot (a statement
    /// after it in the same read begins the transaction, with a snapshot of its own). A transaction
    /// that holds or keeps rows of devices (a write) reads them one by one, with those rows laid over.
    func deviceView(_ id: String, historyLimit: Int, issued withIssued: Bool) throws -> DeviceView? {
        guard pending.isEmpty, held.isEmpty else {
            return try deviceViewOneByOne(id, historyLimit: historyLimit, issued: withIssued)
        }
        let query = Self.deviceViewQuery(id, historyLimit: historyLimit, issued: withIssued)
        if unbegun != nil, inFlight.isEmpty { sendAlone(query) } else { send(query) }
        guard let result = try settle() else { return nil }
        var view: DeviceView?
        for row in result.rows {
            let row = row.makeRandomAccess()
            switch try row["part"].decode(Int.self) {
            case 0: view = DeviceView(record: try device(from: row), rotations: [], history: [], issued: [])
            case 1: view?.rotations.append(try Self.rotation(from: row))
            case 2: view?.history.append(try Self.historyEntry(from: row))
            default: view?.issued.append(try Self.issued(from: row))
            }
        }
        return view
    }

    /// One statement for a device's row, rotations (target order), newest `historyLimit` history entries (oldest
    /// first) and, with `issued`, issued certificates (oldest first): a `UNION ALL` of the four reads, each row with
    /// its `part` (0–3) and the columns of all four tables (NULL where its table has none of that name; the names
    /// the tables share have one type), so that each part's rows decode as that table's. In `part`, then `ordinal`.
    static func deviceViewQuery(_ id: String, historyLimit: Int, issued: Bool) -> PostgresQuery {
        let columns: [(name: String, type: String)] = [
            ("id", "TEXT"), ("first_seen", "BIGINT"), ("last_seen", "BIGINT"), ("inventory", "BYTEA"),
            ("keys", "TEXT"), ("issued_seq", "BIGINT"), ("device", "TEXT"), ("target", "TEXT"), ("sha256", "TEXT"),
            ("state", "TEXT"), ("attempts", "BIGINT"), ("jti", "TEXT"), ("seq", "BIGINT"), ("last_error", "TEXT"),
            ("next_attempt_at", "BIGINT"), ("created_at", "BIGINT"), ("updated_at", "BIGINT"), ("issued_at", "BIGINT"),
            ("sent_at", "BIGINT"), ("applied_at", "BIGINT"), ("verified_at", "BIGINT"), ("resends", "BIGINT"),
            ("issued_by", "TEXT"), ("at", "BIGINT"), ("detail", "TEXT"), ("issuer", "TEXT"), ("serial", "TEXT"),
            ("policy", "TEXT"), ("tag", "BIGINT"), ("keygen_jti", "TEXT"), ("pem", "TEXT"), ("not_before", "BIGINT"),
            ("not_after", "BIGINT"), ("revoked_at", "BIGINT"),
        ]
        let tables: [(table: String, has: Set<String>)] = [
            ("devices", ["id", "first_seen", "last_seen", "inventory", "keys", "issued_seq"]),
            (
                "rotations",
                [
                    "device", "target", "sha256", "state", "attempts", "jti", "seq", "last_error", "next_attempt_at",
                    "created_at", "updated_at", "issued_at", "sent_at", "applied_at", "verified_at", "resends",
                    "issued_by",
                ]
            ),
            ("history", ["device", "target", "at", "state", "jti", "detail"]),
            (
                "issued_certs",
                [
                    "issuer", "serial", "device", "policy", "tag", "keygen_jti", "sha256", "pem", "not_before",
                    "not_after", "issued_at", "state", "revoked_at",
                ]
            ),
        ]
        func list(_ part: Int) -> String {
            let has = tables[part].has
            return columns.map { has.contains($0.name) ? "t.\($0.name)" : "NULL::\($0.type) AS \($0.name)" }
                .joined(separator: ", ")
        }
        // $1 is the device (bound once, where it first appears), $2 the history limit.
        let issuedPart =
            issued
            ? """
            UNION ALL
            SELECT 3, row_number() OVER (ORDER BY t.issued_at, t.serial), \(list(3)) FROM issued_certs t
                WHERE t.device = $1
            """ : ""
        return """
            SELECT \(unescaped: "0::BIGINT AS part, 0::BIGINT AS ordinal, \(list(0))") FROM devices t WHERE t.id = \(id)
            UNION ALL
            SELECT \(unescaped: "1, row_number() OVER (ORDER BY t.target), \(list(1))") FROM rotations t
                WHERE t.device = $1
            UNION ALL
            SELECT \(unescaped: "2, t.id, \(list(2))") FROM
                (SELECT * FROM history WHERE device = $1 ORDER BY id DESC LIMIT \(Int64(historyLimit))) t
            \(unescaped: issuedPart)
            ORDER BY part, ordinal
            """
    }

    func rotationsNeedingTick(now: Int64, ackTimeout: Int64, limit: Int) throws -> [Rotation] {
        let cutoff = now - ackTimeout
        return try query(
            """
            (SELECT * FROM rotations WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= \(now))
            UNION ALL
            (SELECT * FROM rotations WHERE jti IS NOT NULL AND state IN ('pending', 'sent')
                AND COALESCE(sent_at, issued_at) <= \(cutoff))
            UNION ALL
            (SELECT * FROM rotations WHERE state = 'applied' AND sha256 = '' AND applied_at <= \(cutoff))
            LIMIT \(limit)
            """
        ).map(Self.rotation(from:))
    }

    func rotationsAwaitingDelivery(issuedBy replica: String?, includingSent: Bool) throws -> [Rotation] {
        let states = includingSent ? ["pending", "sent"] : ["pending"]
        guard let replica else {
            return try query("SELECT * FROM rotations WHERE state = ANY(\(states)) AND jti IS NOT NULL").map(
                Self.rotation(from:))
        }
        return try query(
            "SELECT * FROM rotations WHERE state = ANY(\(states)) AND jti IS NOT NULL AND issued_by = \(replica)"
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
        pending.expiry[.init(device: device, target: target)] = .some(notAfter)
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

    func strandedRisk(now: Int64, limit: Int) throws -> StrandedRisk {
        let week = StrandedRisk.weekSeconds
        var risk = StrandedRisk()
        for row in try query(
            """
            SELECT e.target, CASE WHEN e.not_after <= \(now) THEN 0 ELSE (e.not_after - \(now) + \(week - 1)) / \(week) END
              AS week, COUNT(*) AS n
            FROM expiry e JOIN devices d ON d.id = e.device
            WHERE e.not_after IS NOT NULL AND e.not_after - \(now) < \(now) - d.last_seen GROUP BY 1, 2
            """)
        {
            risk.byWeek[try row["target"].decode(String.self), default: [:]][try row["week"].decode(Int64.self)] =
                try row["n"].decode(Int.self)
        }
        risk.devices = try query(
            """
            SELECT e.device, e.target, e.not_after, d.last_seen
            FROM expiry e JOIN devices d ON d.id = e.device
            WHERE e.not_after IS NOT NULL AND e.not_after - \(now) < \(now) - d.last_seen
            ORDER BY e.not_after, e.device LIMIT \(limit)
            """
        ).map {
            StrandedRisk.Device(
                device: try $0["device"].decode(String.self), target: try $0["target"].decode(String.self),
                notAfter: try $0["not_after"].decode(Int64.self), lastSeen: try $0["last_seen"].decode(Int64.self))
        }
        return risk
    }

    func deviceCount(trustingKey kid: String) throws -> Int {
        // strpos, not LIKE: kids are base64url and may contain '_', a LIKE wildcard.
        try query("SELECT COUNT(*) AS n FROM devices WHERE strpos(keys, ',' || \(kid) || ',') > 0").first?["n"]
            .decode(Int.self) ?? 0
    }
}

extension EventLoopFuture where Value == PostgresQueryResult {
    /// `wait()`, but a statement sent on a connection that has closed meanwhile fails within a second: postgres-nio
    /// writes a statement to its channel without a promise, so one written after the server ended the session (an
    /// idle-in-transaction timeout, `pg_terminate_backend`, a restart) is never answered.
    func answer(on connection: PostgresConnection) throws -> PostgresQueryResult {
        let answered = DispatchSemaphore(value: 0)
        let result = Mutex<Result<PostgresQueryResult, any Error>?>(nil)
        whenComplete { outcome in
            result.withLock { $0 = outcome }
            answered.signal()
        }
        while answered.wait(timeout: .now() + 1) == .timedOut {
            if connection.isClosed, result.withLock({ $0 == nil }) {
                throw StoreUnavailable("the PostgreSQL connection closed before the statement was answered")
            }
        }
        return try result.withLock { $0! }.get()
    }
}

/// Opens the store a config's `store:` URL names: `sqlite:PATH` or `postgres://…`.
/// `sessionTimeout` (PostgreSQL): seconds after which the server ends a session of this process that sits idle
/// inside a transaction, or the leadership's idle session — a replica's `deadAfter`, so that a paused replica
/// holds no lock, and no leadership, longer than that.
/// `applicationName`: the PostgreSQL sessions' `application_name` (`certrot-<replica>` in a cluster).
/// `checkIntegrity: false`: a SQLite store's `quick_check` is left to the caller (the daemon runs it beside its
/// start, ``RotationStore/checkIntegrity()``).
public func openStore(
    url: String, sessionTimeout: Int64? = nil, applicationName: String = "certrot", checkIntegrity: Bool = true
) throws -> any RotationStore {
    if let path = SQLiteStore.path(fromURL: url) { return try SQLiteStore(path: path, checkIntegrity: checkIntegrity) }
    try validateStoreURL(url)
    return try PostgresStore(url: url, sessionTimeout: sessionTimeout, applicationName: applicationName)
}

/// Checks a `store:` URL's form without opening it (`certrot config check`).
public func validateStoreURL(_ url: String) throws {
    if SQLiteStore.path(fromURL: url) != nil { return }
    guard PostgresStore.isURL(url) else {
        throw StoreError("'\(url)' is neither sqlite:PATH nor postgres://user@host/database")
    }
    _ = try PostgresStore.configuration(fromURL: url)
}

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
    private var held: [DeviceKey: Held] = [:]

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

    /// Sends `query` without waiting for it.
    func send(_ query: PostgresQuery) {
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
        send(readOnly ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN")
    }

    func commit() throws {
        flush()
        send("COMMIT")
        try settle()
        statistics?.transactions.add(1, ordering: .relaxed)
    }

    /// Drops the kept writes and rolls back; false when the connection is unusable.
    func rollback() -> Bool {
        pending = PendingWrites()
        _ = try? settle()
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
        pending.members[.init(campaign: m.campaign, device: m.device)] = m
    }

    func member(campaign: String, device: String) throws -> CampaignMember? {
        if let kept = pending.members[.init(campaign: campaign, device: device)] { return kept }
        if let held = held[DeviceKey(device)] { return held.memberships.first { DeviceID.same($0.campaign, campaign) } }
        return try rows("SELECT * FROM campaign_members WHERE campaign = \(campaign) AND device = \(device)").first
            .map(Self.member(from:))
    }

    func memberships(device: String) throws -> [CampaignMember] {
        var found =
            try held[DeviceKey(device)]?.memberships
            ?? rows("SELECT * FROM campaign_members WHERE device = \(device)").map(Self.member(from:))
        for kept in pending.members.values where DeviceID.same(kept.device, device) {
            found = Self.laid(kept, over: found)
        }
        return found
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
        // Not waited for: the reads that follow run after it, so they see the device only once it is held.
        guard held[DeviceKey(device)] == nil else { return }  // held already
        send("SELECT pg_advisory_xact_lock(hashtextextended(\("device:" + device), 0))")
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

    /// `certrot_fence` takes the leadership row FOR SHARE, so a replica taking the leadership (which bumps the
    /// epoch) waits until this transaction ends, and fails the transaction (SQLSTATE CR001) when the epoch has
    /// moved. Sent without waiting: its failure surfaces at the next wait, at the latest at COMMIT.
    func fence() throws {
        guard let epoch else { throw LeadershipLost("this replica does not hold the leadership") }
        send("SELECT certrot_fence(\(epoch))")
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
public func openStore(
    url: String, sessionTimeout: Int64? = nil, applicationName: String = "certrot"
) throws -> any RotationStore {
    if let path = SQLiteStore.path(fromURL: url) { return try SQLiteStore(path: path) }
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

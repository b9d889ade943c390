import CertrotCore
import NIOCore
import PostgresNIO

/// The writes of a PostgreSQL transaction not yet sent: rows of the tables the engine writes on every message,
/// kept until a statement that could read them, or COMMIT, and then sent together as one statement, a multi-row
/// upsert or insert per table joined by data-modifying CTEs (docs/performance.md, "PostgreSQL").
///
/// Each upserted row is kept once, by its key, with its last value (one statement may not upsert a row twice);
/// rows go out in key order, so two replicas' flushes take their row locks in the same order. History and audit
/// records keep the order they were appended in (ids and seqs follow it).
struct PendingWrites {
    /// Keys by bytes (``DeviceKey``), not by Swift's canonical equivalence: two IDs that differ only in their
    /// Unicode normalisation are two rows in the database, and two here.
    struct RotationKey: Hashable, Comparable {
        var device: DeviceKey
        var target: DeviceKey
        init(device: String, target: String) {
            self.device = DeviceKey(device)
            self.target = DeviceKey(target)
        }
        static func < (a: Self, b: Self) -> Bool { a.device != b.device ? a.device < b.device : a.target < b.target }
    }
    struct MemberKey: Hashable, Comparable {
        var campaign: DeviceKey
        var device: DeviceKey
        init(campaign: String, device: String) {
            self.campaign = DeviceKey(campaign)
            self.device = DeviceKey(device)
        }
        static func < (a: Self, b: Self) -> Bool {
            a.campaign != b.campaign ? a.campaign < b.campaign : a.device < b.device
        }
    }

    var devices: [DeviceKey: DeviceRecord] = [:]
    var rotations: [RotationKey: Rotation] = [:]
    var members: [MemberKey: CampaignMember] = [:]
    var expiry: [RotationKey: Int64?] = [:]
    var bundles: [BundleRecord] = []
    var bundleIndex: [DeviceKey: Int] = [:]
    var history: [(device: String, entry: HistoryEntry)] = []
    var audit: [AuditRecord] = []

    var isEmpty: Bool {
        devices.isEmpty && rotations.isEmpty && members.isEmpty && expiry.isEmpty && bundles.isEmpty
            && history.isEmpty && audit.isEmpty
    }

    /// Rows kept, for the statistics.
    var rows: Int {
        devices.count + rotations.count + members.count + expiry.count + bundles.count + history.count + audit.count
    }

    mutating func insertBundle(_ bundle: BundleRecord) {
        bundleIndex[DeviceKey(bundle.jti)] = bundles.count
        bundles.append(bundle)
    }

    func bundle(jti: String) -> BundleRecord? { bundleIndex[DeviceKey(jti)].map { bundles[$0] } }

    /// The statements that write everything kept, in order; at most `maxBinds` parameters each.
    func statements(inventories: StoredInventories, maxBinds: Int = 30_000) -> [PostgresQuery] {
        var out = StatementBuilder(maxBinds: maxBinds)
        out.rows(
            "INSERT INTO devices (id, first_seen, last_seen, inventory, keys, issued_seq) VALUES",
            devices.keys.sorted().map { devices[$0]! }, columns: 6,
            """
            ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, inventory = excluded.inventory,
                keys = excluded.keys, issued_seq = excluded.issued_seq
            """
        ) { row, d in
            row.text(d.id)
            row.bigint(d.firstSeen)
            row.bigint(d.lastSeen)
            row.bytea(d.inventory.map { ByteBuffer(bytes: inventories.encode(device: d.id, $0)) })
            row.text(d.inventory?.keys.map { "," + $0.joined(separator: ",") + "," })
            row.bigint(d.issuedSeq)
        }
        out.rows(
            "INSERT INTO rotations (\(RotationSQL.columns)) VALUES",
            rotations.keys.sorted().map { rotations[$0]! }, columns: RotationSQL.names.count,
            RotationSQL.onConflictUpdate
        ) { row, r in
            row.text(r.device)
            row.text(r.target.description)
            row.text(r.sha256)
            row.text(r.state.rawValue)
            row.bigint(Int64(r.attempts))
            row.text(r.jti)
            row.bigint(r.seq)
            row.text(r.lastError)
            row.bigint(r.nextAttemptAt)
            row.bigint(r.createdAt)
            row.bigint(r.updatedAt)
            row.bigint(r.issuedAt)
            row.bigint(r.sentAt)
            row.bigint(r.appliedAt)
            row.bigint(r.verifiedAt)
            row.bigint(Int64(r.resends))
            row.text(r.issuedBy)
        }
        out.rows(
            "INSERT INTO campaign_members (campaign, device, wave, state, settled, reason, updated_at) VALUES",
            members.keys.sorted().map { members[$0]! }, columns: 7,
            """
            ON CONFLICT (campaign, device) DO UPDATE SET wave = excluded.wave, state = excluded.state,
                settled = excluded.settled, reason = excluded.reason, updated_at = excluded.updated_at
            """
        ) { row, m in
            row.text(m.campaign)
            row.text(m.device)
            row.bigint(Int64(m.wave))
            row.text(m.state.rawValue)
            row.bigint(m.settled ? 1 : 0)
            row.text(m.reason)
            row.bigint(m.updatedAt)
        }
        out.rows(
            "INSERT INTO expiry (device, target, not_after) VALUES",
            expiry.keys.sorted().map { ($0, expiry[$0]!) }, columns: 3,
            "ON CONFLICT (device, target) DO UPDATE SET not_after = excluded.not_after"
        ) { row, e in
            row.text(e.0.device.id)
            row.text(e.0.target.id)
            row.bigint(e.1)
        }
        out.rows(
            "INSERT INTO bundles (jti, device, seq, iat, exp, jws, max_message) VALUES", bundles, columns: 7, ""
        ) { row, b in
            row.text(b.jti)
            row.text(b.device)
            row.bigint(b.seq)
            row.bigint(b.iat)
            row.bigint(b.exp)
            row.text(b.jws)
            row.bigint(Int64(b.maxMessage))
        }
        out.rows("INSERT INTO history (device, target, at, state, jti, detail) VALUES", history, columns: 6, "") {
            row, h in
            row.text(h.device)
            row.text(h.entry.target)
            row.bigint(h.entry.at)
            row.text(h.entry.state)
            row.text(h.entry.jti)
            row.text(h.entry.detail)
        }
        out.rows(
            "INSERT INTO audit (seq, at, kind, device, subject, body, prev, hash, signature) VALUES", audit,
            columns: 9, ""
        ) { row, r in
            row.bigint(r.seq)
            row.bigint(r.at)
            row.text(r.kind.rawValue)
            row.text(r.device)
            row.text(r.subject)
            row.text(r.body)
            row.text(r.prev)
            row.text(r.hash)
            row.text(r.signature)
        }
        return out.finish()
    }

    /// PostgreSQL's `COLLATE "C"` order: the UTF-8 bytes.
    static func byteOrder(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}

/// Builds multi-row INSERTs with typed placeholders, several to a statement as data-modifying CTEs, each
/// statement under a parameter limit (PostgreSQL takes at most 65,535).
struct StatementBuilder {
    /// One row's values, bound in column order; each placeholder carries its column's type, so that a column
    /// holding NULL in every row still has one.
    struct Row {
        var binds: PostgresBindings
        var sql: String = ""

        private mutating func placeholder(_ type: String) {
            sql += sql.isEmpty ? "(" : ", "
            sql += "$\(binds.count)::\(type)"
        }
        mutating func text(_ value: String?) {
            binds.append(value)
            placeholder("TEXT")
        }
        mutating func bigint(_ value: Int64?) {
            binds.append(value)
            placeholder("BIGINT")
        }
        mutating func bytea(_ value: ByteBuffer?) {
            binds.append(value)
            placeholder("BYTEA")
        }
    }

    let maxBinds: Int
    private var binds = PostgresBindings()
    private var parts: [String] = []
    private var done: [PostgresQuery] = []

    init(maxBinds: Int) { self.maxBinds = maxBinds }

    mutating func rows<Item>(
        _ head: String, _ items: [Item], columns: Int, _ tail: String, _ bind: (inout Row, Item) -> Void
    ) {
        var start = 0
        while start < items.count {
            if binds.count + columns > maxBinds { close() }
            let room = max(1, (maxBinds - binds.count) / columns)
            let end = min(items.count, start + room)
            var values: [String] = []
            values.reserveCapacity(end - start)
            var row = Row(binds: binds)
            for item in items[start..<end] {
                row.sql = ""
                bind(&row, item)
                values.append(row.sql + ")")
            }
            binds = row.binds
            parts.append(head + " " + values.joined(separator: ", ") + (tail.isEmpty ? "" : " " + tail))
            start = end
        }
    }

    /// The statements so far.
    mutating func finish() -> [PostgresQuery] {
        close()
        return done
    }

    private mutating func close() {
        guard let last = parts.last else { return }
        let ctes = parts.dropLast().enumerated().map { "w\($0.offset) AS (\($0.element))" }
        let sql = ctes.isEmpty ? last : "WITH " + ctes.joined(separator: ", ") + " " + last
        done.append(PostgresQuery(unsafeSQL: sql, binds: binds))
        binds = PostgresBindings()
        parts = []
    }
}

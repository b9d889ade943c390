import CertrotCore
import GRDB

/// Reads a store's audit log for `certrot audit export|verify`, also while a daemon runs: a SQLite store is opened
/// read-only, without the daemon's lock and without migrating it; a PostgreSQL store as ever.
public enum AuditReader {
    public static func records(storeURL: String, since: Int64? = nil, device: String? = nil) throws -> [AuditRecord] {
        if let path = SQLiteStore.path(fromURL: storeURL) {
            var configuration = Configuration()
            configuration.readonly = true
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            defer { try? queue.close() }
            return try queue.read { db in
                guard try db.tableExists("audit") else { return [] }
                return try Row.fetchAll(
                    db,
                    sql: """
                        SELECT \(SQLiteTransaction.auditColumns) FROM audit WHERE (? IS NULL OR at >= ?)
                            AND (? IS NULL OR device = ?) ORDER BY seq
                        """, arguments: [since, since, device, device]
                ).map(SQLiteTransaction.audit(from:))
            }
        }
        let store = try openStore(url: storeURL)
        defer { store.close() }
        return try store.read { tx in
            var all: [AuditRecord] = []
            while true {
                let page = try tx.auditRecords(after: all.last?.seq ?? 0, limit: 5000, since: since, device: device)
                all += page
                if page.count < 5000 { return all }
            }
        }
    }
}

import CertrotStore
import Foundation
import Testing

/// The reads the engine makes on every tick, and over the whole fleet at a start, use an index: a plan that scans
/// the rotations table reads every device's row each time (#35 §3: a restart's look for bundles to send again
/// scanned 100,000 rotations, 0.125 s of a 0.49 s recovery; a scan in the tick's read would cost ~19 ms at that size,
/// four times a second).
@Suite struct SQLiteQueryPlanTests {
    @Test func aTicksRead_andARestartsRead_useAnIndex_notAScanOfEveryRotation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("certrot-plans-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: dir.appendingPathComponent("store.db").path)
        defer { store.close() }
        var queries = [SQLiteQueries.needingTick]
        for includingSent in [false, true] {
            for byReplica in [false, true] {
                queries.append(SQLiteQueries.awaitingDelivery(includingSent: includingSent, byReplica: byReplica))
            }
        }
        for sql in queries {
            let plan = try store.plan(of: sql)
            #expect(plan.contains { $0.contains("rotations USING INDEX") }, "\(plan)")
            #expect(!plan.contains { $0.hasPrefix("SCAN rotations") }, "\(plan)\n\(sql)")
        }
    }
}

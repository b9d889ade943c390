import CertrotCore
import Foundation
import GRDB
import Testing

@testable import CertrotStore

/// A database written by the previous certrot (schema v4) opened by this one: v5 adds the kept rotation counts
/// and they start from what the table holds.
@Suite struct MigrationTests {
    @Test func aV4DatabaseGetsItsRotationCountsOnUpgrade() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("certrot-v4-\(UUID().uuidString).db")
            .path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let queue = try DatabaseQueue(path: path)
        try SQLiteStore.migrator.migrate(queue, upTo: "v4-cluster")
        try queue.write { db in
            for (device, target, state) in [
                ("d1", "ca", "verified"), ("d2", "ca", "verified"), ("d3", "ca", "sent"), ("d3", "c1.0", "pending"),
            ] {
                try db.execute(
                    sql:
                        "INSERT INTO rotations (device, target, sha256, state, created_at, updated_at) VALUES (?, ?, 's', ?, 1, 1)",
                    arguments: [device, target, state])
            }
        }
        try queue.close()
        let store = try SQLiteStore(path: path)
        #expect(
            try store.read { tx in try tx.rotationCounts() } == [
                "ca": ["verified": 2, "sent": 1], "c1.0": ["pending": 1],
            ])
        // And they follow changes from then on.
        try store.write { tx throws in
            var rotation = try #require(tx.rotations(device: "d3").first { $0.target == "ca" })
            rotation.state = .applied
            try tx.saveRotation(rotation)
        }
        #expect(
            try store.read { tx in try tx.rotationCounts() } == [
                "ca": ["verified": 2, "applied": 1], "c1.0": ["pending": 1],
            ])
    }
}

import CertrotCore
import Foundation
import PostgresNIO

/// Rows as records: devices and rotations read from PostgreSQL.
extension PostgresTransaction {
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

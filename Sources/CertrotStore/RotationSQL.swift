/// The rotations table's columns, in the order both stores bind them, and the upsert that follows an insert of
/// them: every column but the key takes the new value. One list, so that neither store forgets a column.
enum RotationSQL {
    static let key = ["device", "target"]
    static let names =
        key + [
            "sha256", "state", "attempts", "jti", "seq", "last_error", "next_attempt_at", "created_at", "updated_at",
            "issued_at", "sent_at", "applied_at", "verified_at", "resends", "issued_by",
        ]
    static let columns = names.joined(separator: ", ")
    static let onConflictUpdate =
        "ON CONFLICT (\(key.joined(separator: ", "))) DO UPDATE SET "
        + names.dropFirst(key.count).map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
}

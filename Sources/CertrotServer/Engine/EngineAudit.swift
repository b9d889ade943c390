import CertrotCore
import Foundation

/// The audit log (docs/security.md, "Audit log"): records appended in the transaction of what they record, and
/// checkpoints signed with the bundle-signing key.
extension Engine {
    /// Appends a record and counts it.
    func audit(
        _ kind: AuditRecord.Kind, device: String? = nil, subject: String? = nil, body: [String: Any],
        tx: any StoreTransaction
    ) throws {
        try tx.audit(kind, at: clock(), device: device, subject: subject, body: body)
        observability?.auditRecord(kind.rawValue)
    }

    /// On a tick: a checkpoint when records wait unsigned and the last checkpoint is `auditCheckpointSeconds`
    /// old or `auditCheckpointRecords` records back (or, after a start, at once); and one every
    /// `auditHeartbeatSeconds` when nothing happens, so that a verifier can tell a cut tail from a quiet daemon.
    func auditTick(tx: any StoreTransaction) throws {
        let now = clock()
        // Looked at every few seconds, not every tick: reading the head takes the log's lock on PostgreSQL, which
        // every replica's appends wait for.
        guard now >= nextAuditCheck else { return }
        nextAuditCheck = now.saturatingAdd(Self.auditCheckSeconds)
        guard let last = try tx.lastAuditRecord() else { return }
        let due: Bool
        if last.kind == .checkpoint {
            due = now.saturatingSubtract(last.at) >= Self.auditHeartbeatSeconds
            lastAuditCheckpoint = (last.seq, last.at)
        } else if let checkpoint = lastAuditCheckpoint {
            due =
                now.saturatingSubtract(checkpoint.at) >= Self.auditCheckpointSeconds
                || last.seq - checkpoint.seq >= Self.auditCheckpointRecords
        } else {
            due = true
        }
        guard due else { return }
        let checkpoint: AuditRecord
        do {
            checkpoint = try AuditChain.checkpoint(after: last, at: now, key: signer)
        } catch {
            // The token cannot sign now; the checkpoint follows on a later tick (readiness reports the token).
            observability?.signingFailed(error.message)
            logger.debug("audit checkpoint waits for the signing key", metadata: ["error": "\(error)"])
            return
        }
        try tx.appendAudit(checkpoint)
        observability?.auditRecord(AuditRecord.Kind.checkpoint.rawValue)
        lastAuditCheckpoint = (checkpoint.seq, checkpoint.at)
    }

    static let auditCheckSeconds: Int64 = 5
    static let auditCheckpointSeconds: Int64 = 60
    static let auditCheckpointRecords: Int64 = 1000
    static let auditHeartbeatSeconds: Int64 = 3600
}

extension BundleOp {
    /// What the audit log keeps of an op: everything but the credential's bytes (their digest is there).
    var auditSummary: [String: Any] {
        var summary: [String: Any] = ["op": op.rawValue]
        summary["tag"] = tag
        summary["type"] = type
        summary["sha256"] = sha256
        summary["kid"] = kid
        summary["subject"] = subject
        return summary
    }
}

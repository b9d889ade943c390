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

    /// Retention (`retention.audit`): the log is cut before a checkpoint older than the retention, and older than
    /// the issuance of every certificate that has not expired, so that a retained log starts at a signed record
    /// and keeps what an auditor needs of every certificate still in use. An `audit.pruned` record, covered by the
    /// next checkpoint, says where the log now starts; a verifier refuses a log cut anywhere else. At most
    /// ``auditPruneBatch`` records go per sweep. Returns how many went.
    func pruneAudit(now: Int64, tx: any StoreTransaction) throws -> Int {
        var cutoff = now.saturatingSubtract(retention.audit)
        if let oldest = try tx.oldestUnexpiredIssuance(now: now) { cutoff = min(cutoff, oldest) }
        guard let anchor = try tx.auditPruneAnchor(before: cutoff, within: Self.auditPruneBatch) else { return 0 }
        // The head first: on PostgreSQL reading it takes the log's lock, which appends wait for.
        guard let last = try tx.lastAuditRecord() else { return 0 }
        let deleted = try tx.deleteAudit(before: anchor.seq)
        guard deleted > 0 else { return 0 }
        let record = AuditChain.next(
            after: last, at: now, kind: .auditPruned, subject: String(anchor.seq),
            body: ["from": anchor.seq, "anchor": anchor.hash, "records": deleted, "before": cutoff])
        try tx.appendAudit(record)
        observability?.auditRecord(AuditRecord.Kind.auditPruned.rawValue)
        logger.info(
            "audit log pruned by retention", metadata: ["records": "\(deleted)", "startsAt": "\(anchor.seq)"])
        return deleted
    }

    static let auditPruneBatch = 5000

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

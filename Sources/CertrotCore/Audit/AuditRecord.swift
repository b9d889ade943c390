import Crypto
import Foundation

/// One entry of the audit log (docs/security.md, "Audit log"): what certrot signed, issued, revoked, or was asked
/// to change, appended in the transaction of the change it records. Records are hash-chained: each carries the
/// SHA-256 of the one before, and a checkpoint signs the chain's head with the bundle-signing key.
public struct AuditRecord: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case bundleSigned = "bundle.signed"
        case certificateIssued = "certificate.issued"
        case certificateRevoked = "certificate.revoked"
        case operatorRequest = "operator.request"
        case campaignState = "campaign.state"
        /// `attestation: learn` pinned a device's modem identity key (subject: the modem's UUID).
        case identityPinned = "identity.pinned"
        /// Retention cut the log before a checkpoint (body: `from`, the seq and `anchor`, the hash of that
        /// checkpoint, where the log now starts; `records`, how many went).
        case auditPruned = "audit.pruned"
        /// `certrot enroll` gave a device its first identity (subject: the certificate's serial).
        case deviceEnrolled = "device.enrolled"
        case checkpoint
    }

    /// Position in the chain, from 1, without gaps.
    public var seq: Int64
    public var at: Int64
    public var kind: Kind
    public var device: String?
    /// What the record is about: a bundle's jti, a certificate's serial, a method, a campaign id.
    public var subject: String?
    /// The record's details as canonical JSON (sorted keys).
    public var body: String
    /// SHA-256 (hex) of the previous record's canonical form; 64 zeros for the first.
    public var prev: String
    /// SHA-256 (hex) of this record's canonical form.
    public var hash: String
    /// A checkpoint's ES256 signature (base64url, r‖s) over its `hash`, by the key `body.kid` names.
    public var signature: String?

    public static let genesis = String(repeating: "0", count: 64)

    /// Everything but `hash` and `signature`, as sorted-key JSON: what `hash` is computed over.
    public var canonical: [UInt8] {
        var object: [String: Any] = ["seq": seq, "at": at, "kind": kind.rawValue, "body": body, "prev": prev]
        object["device"] = device
        object["subject"] = subject
        // Plain strings and integers: serialisation cannot fail.
        return CanonicalJSON.data(object) ?? []
    }

    public init(
        seq: Int64, at: Int64, kind: Kind, device: String?, subject: String?, body: String, prev: String,
        hash: String = "", signature: String? = nil
    ) {
        self.seq = seq
        self.at = at
        self.kind = kind
        self.device = device
        self.subject = subject
        self.body = body
        self.prev = prev
        self.hash = hash
        self.signature = signature
        if hash.isEmpty { self.hash = Hex.sha256(canonical) }
    }

    /// The body for a record: `fields` as canonical JSON.
    public static func body(_ fields: [String: Any]) -> String {
        String(decoding: CanonicalJSON.data(fields) ?? Array("{}".utf8), as: UTF8.self)
    }
}

/// Appending to, and checking, a chain of ``AuditRecord``s.
public enum AuditChain {
    /// The record after `previous` (nil: the first).
    public static func next(
        after previous: AuditRecord?, at: Int64, kind: AuditRecord.Kind, device: String? = nil, subject: String? = nil,
        body: [String: Any]
    ) -> AuditRecord {
        AuditRecord(
            seq: (previous?.seq ?? 0) + 1, at: at, kind: kind, device: device, subject: subject,
            body: AuditRecord.body(body), prev: previous?.hash ?? AuditRecord.genesis)
    }

    /// A checkpoint after `previous`, signed with `key`: it covers every record up to and including itself.
    public static func checkpoint(
        after previous: AuditRecord?, at: Int64, key: SigningKey
    ) throws(CertrotError) -> AuditRecord {
        var record = next(
            after: previous, at: at, kind: .checkpoint, body: ["kid": key.kid, "records": (previous?.seq ?? 0) + 1])
        let signature = try key.signature(for: Array(record.hash.utf8))
        record.signature = Base64URL.encode(signature.rawRepresentation)
        return record
    }

    /// What is wrong with a chain, at the first bad record.
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// The position in the list given (from 0), and the record's own seq when it has one.
        public var index: Int
        public var seq: Int64?
        public var reason: String

        public init(index: Int, seq: Int64?, reason: String) {
            self.index = index
            self.seq = seq
            self.reason = reason
        }

        public var description: String {
            "record \(index + 1)\(seq.map { " (seq \($0))" } ?? ""): \(reason)"
        }
    }

    /// What a verification found: how many records, and the last checkpoint.
    public struct Summary: Sendable, Equatable {
        public var records: Int
        public var lastCheckpoint: AuditRecord?
        /// Records after the last checkpoint (not yet covered by a signature).
        public var unsigned: Int
    }

    /// Checks `records` (in order): each hash, each link to the one before, contiguous seqs from `records[0]`'s
    /// (1 unless `partial`), every checkpoint's signature under `keys`; and, when `now` is given, that the last
    /// checkpoint is no older than `maxCheckpointAge`, so that a cut tail is found. Throws the first problem.
    public static func verify(
        _ records: [AuditRecord], keys: [VerificationKey], partial: Bool = false, now: Int64? = nil,
        maxCheckpointAge: Int64 = 3600
    ) throws(Problem) -> Summary {
        var previous: AuditRecord?
        var lastCheckpoint: AuditRecord?
        var pruned: (from: Int64?, anchor: String?)?
        for (index, record) in records.enumerated() {
            func fail(_ reason: String) -> Problem { Problem(index: index, seq: record.seq, reason: reason) }
            if Hex.sha256(record.canonical) != record.hash {
                throw fail("its hash does not match its content (edited)")
            }
            if let previous {
                guard record.seq == previous.seq + 1 else {
                    throw fail("seq \(record.seq) follows \(previous.seq) (a record is missing or out of order)")
                }
                guard record.prev == previous.hash else {
                    throw fail("it does not link to the record before (removed, reordered or replaced)")
                }
            } else if !partial {
                // A log retention cut starts at a signed checkpoint, and an audit.pruned record later in the
                // chain says so (checked below).
                guard (record.seq == 1 && record.prev == AuditRecord.genesis) || record.kind == .checkpoint else {
                    throw fail("the log does not start at its first record (seq \(record.seq))")
                }
            }
            if record.kind == .auditPruned {
                let body = try? JSONSerialization.jsonObject(with: Data(record.body.utf8)) as? [String: Any]
                pruned = ((body?["from"] as? NSNumber)?.int64Value, body?["anchor"] as? String)
            }
            if record.kind == .checkpoint {
                guard let signature = record.signature.flatMap(Base64URL.decode),
                    let raw = try? P256.Signing.ECDSASignature(rawRepresentation: signature),
                    let body = try? JSONSerialization.jsonObject(with: Data(record.body.utf8)) as? [String: Any],
                    let kid = body["kid"] as? String
                else { throw fail("a checkpoint without a readable signature") }
                guard let key = keys.first(where: { $0.kid == kid }) else {
                    throw fail("a checkpoint signed by an unknown key (\(kid))")
                }
                guard key.publicKey.isValidSignature(raw, for: Array(record.hash.utf8)) else {
                    throw fail("the checkpoint's signature does not verify")
                }
                lastCheckpoint = record
            } else if record.signature != nil {
                throw fail("a signature on a record that is not a checkpoint")
            }
            previous = record
        }
        if !partial, let first = records.first, first.seq != 1 || first.prev != AuditRecord.genesis {
            guard let pruned, pruned.from == first.seq, pruned.anchor == first.hash else {
                throw Problem(
                    index: 0, seq: first.seq,
                    reason:
                        "the log starts at seq \(first.seq), and no audit.pruned record says retention cut it there "
                        + "(records before it were removed)")
            }
        }
        if let now, !records.isEmpty {
            let covered = lastCheckpoint?.at ?? records[0].at
            if now.saturatingSubtract(covered) > maxCheckpointAge {
                throw Problem(
                    index: records.count - 1, seq: records.last?.seq,
                    reason:
                        "the last checkpoint is \(now.saturatingSubtract(covered)) s old (at most \(maxCheckpointAge) s): "
                        + "the end of the log is missing")
            }
        }
        let unsigned =
            records.count - (lastCheckpoint.map { cp in records.firstIndex(of: cp).map { $0 + 1 } ?? 0 } ?? 0)
        return Summary(records: records.count, lastCheckpoint: lastCheckpoint, unsigned: unsigned)
    }
}

extension StoreTransaction {
    /// Appends the next record of the audit log, in this transaction (so the log and the state it describes
    /// commit together or not at all).
    @discardableResult
    public func audit(
        _ kind: AuditRecord.Kind, at: Int64, device: String? = nil, subject: String? = nil, body: [String: Any]
    ) throws -> AuditRecord {
        let record = AuditChain.next(
            after: try lastAuditRecord(), at: at, kind: kind, device: device, subject: subject, body: body)
        try appendAudit(record)
        return record
    }
}

import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// Signing and sending bundles, and re-sending them after a restart.
extension Engine {
    /// Issues one bundle carrying every target the device is waiting for, unless a bundle is already out: a device
    /// has at most one bundle in flight, so seqs arrive in order.
    func issueIfIdle(
        device: DeviceRecord, rotations: [Rotation], tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws {
        guard !rotations.contains(where: \.isInFlight) else { return }
        var waiting = rotations.filter(\.awaitsBundle).sorted { $0.target < $1.target }
        guard !waiting.isEmpty else { return }
        let now = clock()
        waiting = try withoutSuperseded(waiting, device: device.id, tx: tx)
        waiting = try withinIssuanceBudget(waiting, device: device.id, now: now, tx: tx)
        guard !waiting.isEmpty else { return }
        let world = KindContext(
            campaigns: campaigns, device: device.id, inventory: device.inventory, tx: tx, now: now)
        let perRotation = try waiting.compactMap { try kinds.ops(for: $0, in: world) }
        guard !perRotation.isEmpty, perRotation.count == waiting.count else {
            if perRotation.count != waiting.count {
                logger.error(
                    "a waiting rotation names no known target; not issuing", metadata: ["device": "\(device.id)"])
            }
            return
        }
        let ops = perRotation.flatMap { $0 }
        // Never sign an op the device's own check (docs/protocol.md §5, step 11) refuses: a keygen subject made from
        // a device ID with a quote or a control character in it would break the device's AT%KEYGEN command.
        do {
            for op in ops { try checkedOps.check(op, profile: profile) }
        } catch {
            try fail(waiting, error: "not signed: \(error.message)", now: now, tx: tx)
            logger.error(
                "a bundle op the device would refuse; not signed",
                metadata: ["device": "\(device.id)", "error": "\(error)"])
            return
        }
        // Inventories are bounded to seq ≤ 2^53 − 1 (docs/protocol.md §2); a device that reported the largest seq
        // can take no later bundle, and says so in its rotation rather than wrapping or trapping.
        guard device.issuedSeq < Bounds.maxSeq else {
            try fail(
                waiting, error: "the device's seq is at its maximum (\(Bounds.maxSeq)); no later bundle exists",
                now: now, tx: tx)
            logger.error("cannot issue a bundle: device seq exhausted", metadata: ["device": "\(device.id)"])
            return
        }
        let seq = device.issuedSeq + 1
        let jti = Self.newJTI()
        let claims = BundleClaims(
            sub: device.id, jti: jti, iat: now, exp: now.saturatingAdd(bundleLifetime), seq: seq, ops: ops)
        let key = signingKeys.signer(for: device.inventory)
        // A device that lists "cose" in its inventory's formats gets a compact bundle (docs/protocol.md §12).
        let compact = device.inventory?.formats?.contains(CompactBundle.format) == true
        let jws: String
        do {
            jws =
                compact
                ? BundleRecord.stored(compact: try CompactBundle.sign(claims, with: key))
                : try JWS.sign(claims, with: key)
        } catch  where error.code != .signerUnavailable && error.code != .invalidKey {
            // Not the key: the bundle cannot be encoded (a compact write of a chain out of normal form, say).
            try fail(waiting, error: error.message, now: now, tx: tx)
            logger.error("cannot encode a bundle", metadata: ["device": "\(device.id)", "error": "\(error)"])
            return
        } catch {
            // The token cannot sign now: nothing is issued, the rotations wait in the store and ask again.
            for var rotation in waiting {
                let before = rotation
                rotation.waitForSigner(
                    error: "waiting for the signing key: \(error.message)",
                    retryAt: now.saturatingAdd(Self.signerRetrySeconds), now: now)
                try save(rotation, previous: before, tx: tx)
            }
            observability?.signingFailed(error.message)
            logger.warning(
                "cannot sign a bundle; the rotation waits", metadata: ["device": "\(device.id)", "error": "\(error)"])
            return
        }
        observability?.bundlesSigned.increment()
        let record = BundleRecord(
            jti: jti, device: device.id, seq: seq, iat: now, exp: claims.exp, jws: jws,
            maxMessage: device.inventory?.maxMessage ?? profile.maxMessage)
        let parts: [[UInt8]]
        do {
            parts = try split(bundle: record)
        } catch let error as CertrotError {
            try fail(waiting, error: error.message, now: now, tx: tx)
            logger.error(
                "cannot deliver a bundle to this device", metadata: ["device": "\(device.id)", "error": "\(error)"])
            return
        }
        var updated = device
        updated.issuedSeq = seq
        try tx.saveDevice(updated)
        try tx.insertBundle(record)
        try audit(
            .bundleSigned, device: device.id, subject: jti,
            body: [
                "seq": seq, "kid": key.kid, "exp": claims.exp, "format": record.format, "ops": ops.map(\.auditSummary),
            ], tx: tx)
        for var rotation in waiting {
            let before = rotation
            rotation.issued(jti: jti, seq: seq, now: now)
            rotation.issuedBy = cluster?.replica
            try save(rotation, previous: before, tx: tx, detail: "bundle issued, \(parts.count) part(s)")
        }
        outbox += parts.map { Outbound(topic: Topics.bundle(device.id), payload: $0, kind: .part(jti: jti)) }
        logger.info(
            "bundle issued",
            metadata: ["device": "\(device.id)", "jti": "\(jti)", "seq": "\(seq)", "parts": "\(parts.count)"])
    }

    /// The rotations that may go into a bundle now: a renewal whose keygen would pass an issuance budget waits
    /// (``ClientCertKind/budgetSpent(device:target:tx:now:)``), counted and logged; the rest go on.
    func withinIssuanceBudget(
        _ waiting: [Rotation], device: String, now: Int64, tx: any StoreTransaction
    ) throws -> [Rotation] {
        var kept: [Rotation] = []
        for var rotation in waiting {
            guard rotation.awaitsCSR,
                let spent = try clientCerts.budgetSpent(device: device, target: rotation.target, tx: tx, now: now)
            else {
                kept.append(rotation)
                continue
            }
            let before = rotation
            rotation.wait(error: spent.reason, retryAt: spent.retryAt, now: now)
            try save(rotation, previous: before, tx: tx)
            observability?.issuanceDeferred(scope: spent.scope)
            logger.notice(
                "a client-certificate renewal waits for its issuance budget",
                metadata: ["device": "\(device)", "budget": "\(spent.scope)", "retryAt": "\(spent.retryAt)"])
        }
        return kept
    }

    /// Seconds between attempts to sign while the signing key's token is unavailable.
    static let signerRetrySeconds: Int64 = 5

    /// Rotations that no bundle can serve: `failed`, with no retry.
    func fail(_ rotations: [Rotation], error: String, now: Int64, tx: any StoreTransaction) throws {
        for var rotation in rotations {
            let before = rotation
            rotation.cannotBeServed(error: error, now: now)
            try save(rotation, previous: before, tx: tx)
        }
    }

    func split(bundle: BundleRecord) throws -> [[UInt8]] {
        try bundle.parts(topic: Topics.bundle(bundle.device))
    }

    /// Why bundles already issued are sent again (same jti and seq, the ack timer started afresh).
    enum Resumption {
        /// This daemon (or replica) started: bundles issued but perhaps never handed to the broker.
        case restart
        /// A replica was found dead: its bundles perhaps never handed to the broker.
        case takeover
        /// This daemon's broker connection came back: also the bundles the broker took but the device has not
        /// acknowledged. Across a broker restart a device with a clean session lost what was queued for it, and a
        /// replica with a clean session lost the acks sent while it was away; a device that had applied the bundle
        /// acks it again (docs/protocol.md §6, already-applied rule).
        case reconnect
    }

    /// Sends bundles issued by `replica` (nil: all) again, as `why` says. A bundle that would expire before an
    /// ack could come back is replaced by a new one instead when it may never have reached the broker (a device
    /// rejects an expired bundle, and a rejection is final), and left to its ack timeout when it did.
    ///
    /// The first ``ResumeBacklog/chunk`` go out with this transaction; the rest wait in ``resumeBacklog`` and go
    /// out a chunk a transaction right after it (``resumeNextChunk()``): at 100,000 devices a restart had 2,689
    /// bundles to send again, and doing them all in the connection's one transaction held the first back 0.7 s
    /// (#35 §3). A new resumption for the same replica replaces what is left of the last: it finds all of it.
    func resumeUndelivered(
        issuedBy replica: String?, _ why: Resumption, tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws {
        let candidates = try tx.rotationsAwaitingDelivery(issuedBy: replica, includingSent: why == .reconnect)
            .sorted { $0.device < $1.device }  // a device's rotations in one chunk: they may share a bundle
        resumeBacklog.removeAll { $0.replica == replica }
        guard !candidates.isEmpty else { return }
        let what =
            switch why {
            case .restart: "resuming bundles issued before the restart"
            case .takeover: "taking over bundles of replica \(replica ?? "")"
            case .reconnect: "back on the broker: sending unacknowledged bundles again"
            }
        logger.info("\(what)", metadata: ["rotations": "\(candidates.count)"])
        startup?.mark("\(candidates.count) rotations to send again read")
        // Replicas resend all in one transaction, as before chunks: ClusterTests' killed-replica takeover failed in 2
        // of 4 full runs with chunks (more bundles than devices), a race not yet found; a single node chunks.
        var backlog = ResumeBacklog(
            replica: replica, why: why, perTransaction: cluster == nil ? ResumeBacklog.chunk : candidates.count,
            candidates: candidates[...])
        try resume(&backlog, tx: tx, outbox: &outbox)
        startup?.mark("the first \(candidates.count - backlog.candidates.count) looked at")
        if !backlog.candidates.isEmpty { resumeBacklog.append(backlog) }
    }

    /// Sends the next chunk of ``resumeBacklog`` in a transaction of its own. False when there is none, or the
    /// store is unavailable (the rest waits for the next batch); a chunk that fails otherwise is dropped, counted
    /// and logged, as a batch's input would be.
    func resumeNextChunk() -> Bool {
        guard var backlog = resumeBacklog.first else { return false }
        let before = backlog
        var outbox: [Outbound] = []
        do {
            try store.write { tx in
                if cluster != nil, isLeader { try tx.fence() }
                try resume(&backlog, tx: tx, outbox: &outbox)
            }
            observability?.storeWrite(ok: true)
        } catch {
            observability?.storeWrite(ok: false, error: "\(error)")
            if let lost = error as? LeadershipLost { fencedOff(lost) }
            if error is StoreUnavailable { return false }
            let dropped = before.candidates.count - backlog.candidates.count
            drops.count("store_error")
            logger.error(
                "resending \(dropped) bundles failed; going on with the rest",
                metadata: ["error": "\(String(reflecting: error))"])
            outbox = []
        }
        if backlog.candidates.isEmpty { resumeBacklog.removeFirst() } else { resumeBacklog[0] = backlog }
        for item in outbox { enqueue(item) }
        flush()
        return true
    }

    /// Sends the next chunk of `backlog` again (see ``resumeUndelivered(issuedBy:_:tx:outbox:)``), taking it off.
    func resume(_ backlog: inout ResumeBacklog, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        let why = backlog.why
        var reissue: Set<DeviceKey> = []
        var end = min(backlog.candidates.startIndex + backlog.perTransaction, backlog.candidates.endIndex)
        while end < backlog.candidates.endIndex, backlog.candidates[end].device == backlog.candidates[end - 1].device {
            end += 1
        }
        let chunk = backlog.candidates[..<end]
        backlog.candidates = backlog.candidates[end...]
        var resent = 0
        for candidate in chunk {
            try tx.lockDevice(candidate.device)
            guard
                var rotation = try tx.rotations(device: candidate.device).first(where: { $0.target == candidate.target }
                ),
                rotation.state == .pending || (why == .reconnect && rotation.state == .sent),
                let jti = rotation.jti, jti == candidate.jti,
                let bundle = try tx.bundle(jti: jti)
            else { continue }
            let before = rotation
            if bundle.exp <= now + policy.ackTimeout {
                guard rotation.state == .pending else { continue }
                rotation.abandonBundle(now: now)
                try save(
                    rotation, previous: before, tx: tx, detail: "bundle \(jti) near expiry after a restart; re-issuing")
                reissue.insert(DeviceKey(rotation.device))
                continue
            }
            if rotation.state == .sent { rotation.sentAt = now } else { rotation.issuedAt = now }
            rotation.nextAttemptAt = nil  // a redelivery scheduled earlier: this is it
            rotation.issuedBy = cluster?.replica
            try tx.saveRotation(rotation)
            guard backlog.resent.insert(jti).inserted else { continue }
            resent += 1
            outbox += try split(bundle: bundle).map {
                Outbound(topic: Topics.bundle(bundle.device), payload: $0, kind: .part(jti: jti))
            }
        }
        for id in reissue.sorted().map(\.id) {
            guard let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
        if why == .reconnect {
            for _ in 0..<resent { observability?.bundleResent("reconnect") }
        }
    }
}

/// What is left to send again of one resumption (``Engine/resumeUndelivered(issuedBy:_:tx:outbox:)``).
package struct ResumeBacklog {
    /// Rotations a transaction: the first of them go out with the transaction that found them.
    package static let chunk = 256
    var replica: String?
    var why: Engine.Resumption
    /// Rotations a transaction for this resumption (all of them on a cluster's replica).
    var perTransaction: Int
    /// The rotations still to look at, a device's together.
    var candidates: ArraySlice<Rotation>
    /// Bundles sent again so far (rotations may share one).
    var resent: Set<String> = []
}

/// ``BundleCheck/checkOp(_:profile:)`` for every op, once per distinct write op: a campaign writes the same chain to
/// every device, and checking its PEM (normal form, size, SHA-256) for each of 100,000 bundles was 6 % of the
/// daemon's CPU (#35 §3). A write op passes here without its check only when its tag, type, digest and PEM are
/// those of one that passed under the same profile (the PEM compared in full).
package struct CheckedOps {
    private var passed: [String: String] = [:]
    static let capacity = 64

    package init() {}

    package mutating func check(_ op: BundleOp, profile: DeviceProfile) throws(CertrotError) {
        guard op.op == .write, let pem = op.pem, let sha = op.sha256 else {
            return try BundleCheck.checkOp(op, profile: profile)
        }
        let key = "\(profile.name)/\(profile.maxCredential)/\(op.tag ?? -1)/\(op.type ?? -1)/\(sha)"
        if passed[key] == pem { return }
        try BundleCheck.checkOp(op, profile: profile)
        if passed.count >= Self.capacity { passed.removeAll() }
        passed[key] = pem
    }
}

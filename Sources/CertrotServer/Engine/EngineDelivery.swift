import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// Between the engine and the broker: what ``Delivery`` tracks, and the rotations it makes `sent`.
extension Engine {
    func published(mid: Int32, reasonCode: Int32, tx: any StoreTransaction) throws {
        let addressee = delivery.device(mid: mid)
        guard let jti = delivery.published(mid: mid, reasonCode: reasonCode) else { return }
        let now = clock()
        // Under the device's lock (another replica may be recording the device's ack right now): the device the
        // part went to, locked (and read ahead) with the batch; read again under the owner's lock should the
        // bundle be another's.
        if let addressee { try tx.lockDevice(addressee) }
        var rotations = try tx.rotations(jti: jti)
        guard let device = rotations.first?.device else { return }
        if addressee.map({ !DeviceID.same($0, device) }) ?? true {
            try tx.lockDevice(device)
            if store.isShared { rotations = try tx.rotations(jti: jti) }
        }
        for var rotation in rotations {
            let before = rotation
            rotation.delivered(now: now)
            if rotation != before { try save(rotation, previous: before, tx: tx) }
        }
    }

    func enqueue(_ item: Outbound) {
        delivery.enqueue(item)
    }

    /// Publishes what the delivery window lets out now; replies on the RPC connection when there is one.
    func flush() {
        guard let client else { return }
        delivery.flush(client: client, replies: rpc.map { rpc in { rpc.publish($0) } })
    }

    // MARK: Persistence helpers

    func save(_ rotation: Rotation, previous: Rotation?, tx: any StoreTransaction, detail: String? = nil) throws {
        try tx.saveRotation(rotation)
        // A rotation started over (after it settled, or for a new digest) is what can grow one device's history
        // and bundles without bound (a device flapping its credential): keep that device to the retention bounds
        // then. Everything else grows once per rotation and goes with age (the sweep in `tick`).
        if let previous, previous.sha256 != rotation.sha256 || (previous.isSettled && !rotation.isSettled) {
            try tx.prune(device: rotation.device, keepHistory: retention.history, keepBundles: retention.bundles)
        }
        if previous?.state != rotation.state || previous?.jti != rotation.jti {
            try memberChanged(rotation, tx: tx)
        }
        if rotation.state == .verified, previous?.state != .verified {
            for kind in kinds where kind.owns(rotation.target) {
                for certificate in try kind.verified(rotation, tx: tx, now: clock()) {
                    try audit(
                        .certificateRevoked, device: certificate.device, subject: certificate.serial,
                        body: [
                            "issuer": certificate.issuer, "reason": "superseded", "policy": certificate.policy,
                            "revokedAt": certificate.revokedAt ?? clock(),
                        ], tx: tx)
                }
            }
        }
        guard previous?.state != rotation.state || previous?.jti != rotation.jti else { return }
        if previous?.state != rotation.state {
            observability?.transition(target: rotation.target.description, to: rotation.state.rawValue)
            if rotation.state == .applied, let sent = rotation.sentAt, let applied = rotation.appliedAt {
                observability?.latency("sent_to_applied", seconds: applied - sent)
            }
            if rotation.state == .verified, let applied = rotation.appliedAt, let verified = rotation.verifiedAt {
                observability?.latency("applied_to_verified", seconds: verified - applied)
            }
        }
        try tx.appendHistory(
            device: rotation.device,
            entry: HistoryEntry(
                at: rotation.updatedAt, target: rotation.target.description, state: rotation.state.rawValue,
                jti: rotation.jti,
                detail: detail ?? rotation.lastError))
        logger.info(
            "rotation \(previous?.state.rawValue ?? "new") → \(rotation.state.rawValue)",
            metadata: [
                "device": "\(rotation.device)", "target": "\(rotation.target)", "jti": "\(rotation.jti ?? "-")",
                "attempts": "\(rotation.attempts)",
            ])
    }

    /// Hands the read-only RPC handler what it needs of the engine's state.
    func publishContext() {
        reads?.update(rpcContext)
    }

    var rpcContext: RPC.Context {
        RPC.Context(
            targets: targets, catalogue: catalogue.known.mapValues { ($0.name, $0.notAfter) }, drops: drops,
            logger: logger,
            signerKid: signer.kid,
            nextKid: nextSigner?.kid, keyRotationThreshold: keyRotationThreshold, operators: operators,
            operatorNames: operatorNames,
            now: clock(),
            renewal: catalogue.renewal.mapValues { RenewalInfo(before: $0.before, hasSuccessor: $0.successor != nil) },
            replyPrefix: limits.replyPrefix, signedReads: limits.signedReads, campaignIDs: Set(campaigns.keys),
            clientCertPolicies: clientCerts.policies.map {
                (
                    ClientIdentityStatus.Policy(
                        name: $0.name, tags: $0.tags, renewBefore: $0.renewBefore, learnsIdentity: $0.learnsIdentity),
                    $0.issuer.name
                )
            })
    }
}

import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// What each inbound message and each tick does to a device's rotations.
extension Engine {
    func inventory(
        device id: String, message: MQTTMessage, parsed: Result<Inventory, CertrotError>?, tx: any StoreTransaction,
        outbox: inout [Outbound]
    ) throws {
        let now = clock()
        guard !message.payload.isEmpty else {
            drops.count("empty_inventory")
            return
        }
        let inventory: Inventory
        do {
            inventory = try (parsed ?? Result { () throws(CertrotError) in try Inventory.parse(message.payload) }).get()
        } catch {
            drops.count(error.code.rawValue)
            logger.info("inventory dropped", metadata: ["device": "\(id)", "reason": "\(error.message)"])
            return
        }
        try tx.lockDevice(id)
        var device =
            try tx.device(id) ?? DeviceRecord(id: id, firstSeen: now, lastSeen: now, inventory: nil, issuedSeq: 0)
        device.lastSeen = now
        device.inventory = inventory
        if inventory.seq > device.issuedSeq {
            logger.info(
                "device reports a seq above the last issued; continuing above it",
                metadata: ["device": "\(id)", "seq": "\(inventory.seq)", "issued": "\(device.issuedSeq)"])
            device.issuedSeq = inventory.seq
        }
        try tx.saveDevice(device)

        var rotations = Dictionary(uniqueKeysWithValues: try tx.rotations(device: id).map { ($0.target, $0) })
        try joinContinuous(device: device, tx: tx)
        // What the device should hold, kind by kind: in each tag, the target of the newest campaign it was
        // admitted to, else the configured target; the next signing key if it can report keys; ….
        let world = KindContext(
            campaigns: campaigns, owners: try tagOwners(device: id, tx: tx), rotations: rotations,
            device: id, inventory: inventory, tx: tx, now: now)
        let desired = kinds.flatMap { $0.desired(inventory: inventory, in: world) }
        var redeliver: Set<String> = []
        for kind in kinds { try kind.inventorySaved(device: id, inventory: inventory, tx: tx, now: now) }
        for wanted in desired {
            let (name, digest, holds) = (wanted.target, wanted.sha256, wanted.holds)
            guard var rotation = rotations[name] else {
                if !holds {
                    let rotation = Rotation(device: id, target: name, sha256: digest, now: now)
                    try save(rotation, previous: nil, tx: tx, detail: wanted.why)
                    rotations[name] = rotation
                }
                continue
            }
            let before = rotation
            if rotation.sha256 != digest {
                rotation.restart(sha256: digest, now: now)
            } else if rotation.state == .verified, !holds,
                inventory.seq >= rotation.seq ?? 0 || !mayPredate(message, verifiedAt: rotation.verifiedAt)
            {
                // The device lost the credential (a factory reset — its seq back to 0 —, a manual write): rotate
                // it again. In a cluster, not for an inventory older than the bundle that verified it, which may
                // reach a replica after another replica handled the device's newer one (see mayPredate).
                rotation.credentialLost(now: now, minInterval: rotationPolicy(for: name).retry.base)
            } else if rotation.state == .cancelled {
                // The tag is this target's again (the campaign that took it over was aborted before sending).
                rotation.restart(sha256: digest, now: now)
            }
            if rotation.inventoryArrived(
                holdsTarget: holds, reportedSeq: inventory.seq, fresh: !message.retained,
                policy: rotationPolicy(for: name),
                now: now) == .redeliver, let jti = rotation.jti
            {
                rotation.issuedBy = cluster?.replica
                redeliver.insert(jti)
            }
            if rotation != before {
                try save(rotation, previous: before, tx: tx)
                rotations[name] = rotation
            }
        }
        try self.redeliver(redeliver, device: id, tx: tx, outbox: &outbox)
        try issueIfIdle(device: device, rotations: Array(rotations.values), tx: tx, outbox: &outbox)
    }

    /// Sends the bundles `jtis` of `device` again whole (same jti and seq): the device is back without them.
    func redeliver(_ jtis: Set<String>, device id: String, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        for jti in jtis.sorted() {
            guard let bundle = try tx.bundle(jti: jti) else { continue }
            outbox += try split(bundle: bundle).map {
                Outbound(topic: Topics.bundle(bundle.device), payload: $0, kind: .part(jti: jti))
            }
            observability?.bundleResent("device_back")
            logger.info(
                "device is back without its bundle; sending it again", metadata: ["device": "\(id)", "jti": "\(jti)"])
        }
    }

    /// Seconds after a verification within which, in a cluster, an inventory below the verifying bundle's seq is
    /// taken for one the device published before it applied the bundle (``mayPredate(_:verifiedAt:)``).
    static let reorderWindow: Double = 2

    /// True when, in a cluster, `message` may have been published before the inventory that verified a rotation
    /// at `verifiedAt`. A shared subscription hands one device's messages to different replicas, so they are not
    /// handled in the order the device sent them: after a broker restart every device republishes its inventory,
    /// and the copy a busy replica handles late may show the chain the device held before it applied the bundle
    /// that another replica has verified meanwhile. It may predate unless this replica received it more than
    /// ``reorderWindow`` after the verification; a retained copy handled on catching up, or one without a receive
    /// time, may always. A device that was reset sends a live inventory when it next connects, which does
    /// restart the rotation. One daemon handles a device's messages in order: nothing predates there.
    func mayPredate(_ message: MQTTMessage, verifiedAt: Int64?) -> Bool {
        guard cluster != nil else { return false }
        guard let received = message.receivedAt, let verifiedAt else { return message.retained }
        return received < Double(verifiedAt) + Self.reorderWindow
    }

    // MARK: Ack

    /// A device message parsed, or nil when it does not parse: the drop is counted by its error code and logged.
    func parsed<Message>(
        _ what: String, from device: String, _ parse: () throws(CertrotError) -> Message
    ) -> Message? {
        do {
            return try parse()
        } catch {
            drops.count(error.code.rawValue)
            logger.info("\(what) dropped", metadata: ["device": "\(device)", "reason": "\(error.message)"])
            return nil
        }
    }

    func ack(device id: String, payload: [UInt8], tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        guard let ack = parsed("ack", from: id, { () throws(CertrotError) in try Ack.parse(payload) }) else { return }
        observability?.ack(ack.status.rawValue)
        try tx.lockDevice(id)
        let matching = try tx.rotations(jti: ack.jti)
        guard let first = matching.first else {
            if let bundle = try tx.bundle(jti: ack.jti) {
                drops.count(DeviceID.same(bundle.device, id) ? "stale_ack" : "foreign_ack")
            } else {
                drops.count("unknown_jti")
            }
            logger.info("ack dropped", metadata: ["device": "\(id)", "jti": "\(ack.jti)", "status": "\(ack.status)"])
            return
        }
        guard DeviceID.same(first.device, id) else {
            drops.count("foreign_ack")
            logger.warning(
                "ack for another device's bundle dropped",
                metadata: ["topicDevice": "\(id)", "bundleDevice": "\(first.device)", "jti": "\(ack.jti)"])
            return
        }
        var resend: Set<Int> = []
        var changed = false
        for var rotation in matching {
            let before = rotation
            if case .resend(let parts) = rotation.acknowledged(
                ack, policy: rotationPolicy(for: rotation.target), now: now)
            {
                resend.formUnion(parts)
            }
            if rotation != before {
                changed = true
                try save(rotation, previous: before, tx: tx, detail: ack.reason)
            }
        }
        if !changed { drops.count("duplicate_ack") }
        if !resend.isEmpty, let bundle = try tx.bundle(jti: ack.jti) {
            let parts = try split(bundle: bundle)
            for number in resend.sorted() where number <= parts.count {
                outbox.append(Outbound(topic: Topics.bundle(id), payload: parts[number - 1], kind: .other))
            }
            logger.info(
                "re-sending parts", metadata: ["device": "\(id)", "jti": "\(ack.jti)", "parts": "\(resend.sorted())"])
        }
        // The device's next rotation, if one waits (the device record is read only then).
        let rotations = try tx.rotations(device: id)
        if !rotations.contains(where: \.isInFlight), rotations.contains(where: \.awaitsBundle),
            let device = try tx.device(id)
        {
            try issueIfIdle(device: device, rotations: rotations, tx: tx, outbox: &outbox)
        }
    }

    // MARK: Time

    func tick(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        let due = Set(
            try tx.rotationsNeedingTick(now: now, ackTimeout: shortestAckTimeout, limit: 10_000).map {
                DeviceKey($0.device)
            })
        // Devices whose bundles wait to be sent again (``resumeBacklog``, a start or takeover in this very batch) are
        // left to that: their timers start afresh when those go out, as they did when one transaction resent all.
        let resending =
            resumeBacklog.isEmpty ? [] : Set(resumeBacklog.flatMap { $0.candidates.map { DeviceKey($0.device) } })
        let devices = due.subtracting(resending).sorted().map(\.id)
        try tx.prefetch(devices: devices)
        for id in devices {
            // Read again under the device's lock: another replica may have handled an ack meanwhile.
            try tx.lockDevice(id)
            var changed = false
            var redeliver: Set<String> = []
            for var rotation in try tx.rotations(device: id) {
                let before = rotation
                let effect = rotation.tick(policy: rotationPolicy(for: rotation.target), now: now)
                if effect == .redeliver, let jti = rotation.jti {
                    rotation.issuedBy = cluster?.replica
                    redeliver.insert(jti)
                }
                if rotation != before {
                    try save(rotation, previous: before, tx: tx)
                    changed = true
                }
                // A due retry asks for a bundle; a timeout frees the device for another waiting rotation: either
                // way the device is issued what waits, below.
                if effect == .issueBundle { changed = true }
            }
            try self.redeliver(redeliver, device: id, tx: tx, outbox: &outbox)
            guard changed, let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
        try campaignTick(tx: tx, outbox: &outbox)
        try auditTick(tx: tx)
        if now >= nextRetentionSweep {
            // Bounded work per tick: what is left goes on the next sweep, a minute later.
            let deleted = try tx.prune(before: now.saturatingSubtract(retention.maxAge), limit: 5000)
            let certificates = try tx.pruneIssued(
                expiredBefore: now.saturatingSubtract(retention.issuedCerts), limit: 5000)
            let records = try pruneAudit(now: now, tx: tx)
            observability?.retained(deleted: deleted, what: "history")
            observability?.retained(deleted: certificates, what: "issued_certs")
            observability?.retained(deleted: records, what: "audit")
            let more = deleted >= 5000 || certificates >= 5000 || records >= Self.auditPruneBatch / 2
            nextRetentionSweep = now.saturatingAdd(more ? 1 : 60)
        }
    }
}

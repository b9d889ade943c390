import CertrotCore
import Foundation
import Logging

/// A device's CSR on `{id}/certs/csr`, answering its keygen bundle (docs/protocol.md §11).
extension Engine {
    func csr(device id: String, payload: [UInt8], tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        guard
            let message = parsed("CSR message", from: id, { () throws(CertrotError) in try CSRMessage.parse(payload) })
        else { return }
        try tx.lockDevice(id)
        guard let rotation = try tx.rotations(jti: message.jti).first else {
            if let bundle = try tx.bundle(jti: message.jti) {
                // A CSR for a keygen already answered (redelivered, replayed), or another device's.
                drops.count(DeviceID.same(bundle.device, id) ? "replayed_csr" : "foreign_csr")
            } else {
                drops.count("unknown_jti")
            }
            logger.info("CSR dropped", metadata: ["device": "\(id)", "jti": "\(message.jti)"])
            return
        }
        guard DeviceID.same(rotation.device, id) else {
            drops.count("foreign_csr")
            logger.warning(
                "CSR for another device's keygen dropped",
                metadata: ["topicDevice": "\(id)", "bundleDevice": "\(rotation.device)", "jti": "\(message.jti)"])
            return
        }
        guard clientCerts.owns(rotation.target), rotation.awaitsCSR,
            ![.rejected, .cancelled, .verified].contains(rotation.state),
            let bundle = try tx.bundle(jti: message.jti)
        else {
            drops.count("replayed_csr")
            return
        }
        // A second certificate for one keygen is never issued, whatever the rotation says.
        guard try tx.issued(keygenJTI: message.jti) == nil else {
            drops.count("replayed_csr")
            return
        }
        var updated = rotation
        do {
            let (certificate, pinned) = try clientCerts.issue(
                for: message, rotation: rotation, keygen: bundle, now: now, tx: tx)
            try tx.insertIssued(certificate)
            if let pinned, let key = pinned.key {
                try audit(
                    .identityPinned, device: id, subject: ModemUUID.format(pinned.uuid),
                    body: [
                        "identityKey": key, "policy": certificate.policy, "firstSeenAt": pinned.firstSeenAt,
                        "keygen": certificate.keygenJTI,
                    ], tx: tx)
                logger.notice(
                    "identity key pinned", metadata: ["device": "\(id)", "uuid": "\(ModemUUID.format(pinned.uuid))"])
            }
            try audit(
                .certificateIssued, device: id, subject: certificate.serial,
                body: [
                    "issuer": certificate.issuer, "policy": certificate.policy, "tag": certificate.tag,
                    "sha256": certificate.sha256, "notBefore": certificate.notBefore, "notAfter": certificate.notAfter,
                    "keygen": certificate.keygenJTI,
                ], tx: tx)
            updated.certificateIssued(sha256: certificate.sha256, now: now)
            observability?.certificateIssued(issuer: certificate.issuer)
            try save(
                updated, previous: rotation, tx: tx,
                detail: "CSR taken; certificate \(certificate.serial) issued by \(certificate.issuer), "
                    + "valid until \(certificate.notAfter), for tag \(certificate.tag)")
        } catch let error as CertrotError {
            observability?.csrRefused(error.code.rawValue)
            updated.csrRefused(
                error: "CSR refused: \(error.message)", policy: rotationPolicy(for: rotation.target), now: now)
            try save(updated, previous: rotation, tx: tx)
            logger.warning(
                "CSR refused; nothing issued",
                metadata: ["device": "\(id)", "jti": "\(message.jti)", "reason": "\(error.description)"])
            return
        }
        guard let device = try tx.device(id) else { return }
        try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
    }
}

import CertrotCore
import Crypto
import Foundation
import Logging
import X509

/// Device client certificates (AT%CMNG types 1 and 2) under `clientCerts` policies, renewed in A/B sec tags
/// (docs/protocol.md §11): a `keygen` bundle makes the modem generate a key in the standby tag and publish its CSR;
/// certrot checks the CSR and its attestation, issues a certificate, stores it, and sends a bundle writing it and
/// the server CA chain beside the key and activating the tag. The rotation is verified when an inventory shows the
/// tag active holding that certificate; the certificate used before is then revoked and the issuer's CRL rewritten.
package final class ClientCertKind: CredentialKind {
    let policies: [ClientCertPolicy]
    let byName: [String: ClientCertPolicy]
    let identities: [DeviceKey: DeviceIdentity]
    let budget: IssuanceBudget
    let logger: Logger
    /// Issuers whose CRL is to be rewritten from the store (after the transaction that revoked commits).
    private(set) var crlsDue: Set<String> = []
    private var crlWrittenAt: [String: Int64] = [:]
    private var crlNumber: Int64 = 0
    /// A CRL is valid for this long; it is rewritten daily, so a daemon down for a week leaves it expired (and
    /// mosquitto refusing every client certificate of its issuer) — see docs/client-certificates.md.
    static let crlValidity: Int64 = 7 * 86400
    static let crlRefresh: Int64 = 86400

    init(settings: ClientCertSettings, logger: Logger) {
        policies = settings.policies
        byName = Dictionary(uniqueKeysWithValues: settings.policies.map { ($0.name, $0) })
        identities = settings.identities
        budget = settings.budget
        self.logger = logger
        crlsDue = Set(settings.policies.compactMap { $0.issuer.crlPath == nil ? nil : $0.issuer.name })
    }

    package var inboundFilters: [String] { policies.isEmpty ? [] : [Topics.csrFilter] }

    package func owns(_ target: RotationTarget) -> Bool {
        if case .clientCert(let name) = target { byName[name] != nil } else { false }
    }

    package func slot(of target: RotationTarget, in world: KindContext) -> TagKey? { nil }

    package func policy(of target: RotationTarget) -> ClientCertPolicy? {
        if case .clientCert(let name) = target { byName[name] } else { nil }
    }

    package func desired(inventory: Inventory, in world: KindContext) -> [DesiredCredential] {
        guard let active = inventory.active else { return [] }
        return policies.compactMap { policy in
            guard policy.tags.contains(active) else { return nil }
            let target = RotationTarget.clientCert(policy.name)
            let held = inventory.credential(tag: active, type: 1)
            var notAfter = held?.notAfter
            // The store is read only when the device's word would start a renewal (or gives no expiry): the
            // inventory path of a device with time left stays one without a read. Then certrot's own record of a
            // certificate it issued wins over the device's claim, and a claim about any other certificate starts
            // a renewal at most once per minRenewalInterval (red-team #32, finding 3: a device reporting an early
            // notAfter after each install was renewed in a loop).
            let due = { (expiry: Int64?) in expiry.map { $0 <= world.now.saturatingAdd(policy.renewBefore) } ?? false }
            if notAfter == nil || due(notAfter), let held, let device = world.device, let tx = world.tx {
                let issued = ((try? tx.issued(device: device)) ?? []).filter { $0.policy == policy.name }
                if let own = issued.last(where: { $0.sha256 == held.sha256 }) {
                    notAfter = own.notAfter
                } else if due(notAfter), let last = issued.map(\.issuedAt).max(),
                    world.now < last.saturatingAdd(policy.minRenewalInterval)
                {
                    notAfter = nil
                }
            }
            return ClientCertDesiredState.desired(
                target: target, tags: policy.tags, inventory: inventory, activeNotAfter: notAfter,
                renewBefore: policy.renewBefore,
                current: world.rotations[target].map { .init(sha256: $0.sha256, state: $0.state) }, now: world.now)
        }
    }

    package func ops(for rotation: Rotation, in world: KindContext) throws -> [BundleOp]? {
        guard let policy = policy(of: rotation.target) else { return nil }
        if rotation.awaitsCSR {
            guard let active = world.inventory?.active else { return nil }
            return [
                .keygen(tag: policy.standby(active: active), subject: "CN=" + policy.commonName(for: rotation.device))
            ]
        }
        guard
            let certificate = try world.tx?.issued(device: rotation.device).last(where: {
                $0.policy == policy.name && $0.sha256 == rotation.sha256
            })
        else { return nil }
        return [
            .write(tag: certificate.tag, type: CredentialType.clientCertificate.rawValue, pem: certificate.pem),
            .write(tag: certificate.tag, type: CredentialType.rootCAChain.rawValue, pem: policy.caChain.pem),
            .activate(tag: certificate.tag),
        ]
    }

    // MARK: Issuance budgets

    /// Why a renewal may not start now, and when to look again: the device was issued `perDevicePerDay`
    /// certificates in the last 24 hours, or the fleet `fleetPerHour` in the last hour (red-team #32, finding 3).
    /// Checked before a keygen bundle is signed: a certificate follows only from a keygen, and a device has one
    /// bundle in flight, so a device is never issued more than its budget; the fleet's may be passed by the
    /// keygens already out when it is reached.
    package struct BudgetSpent: Sendable, Equatable {
        /// `device` or `fleet`.
        package var scope: String
        package var reason: String
        package var retryAt: Int64
    }

    package func budgetSpent(
        device: String, target: RotationTarget, tx: any StoreTransaction, now: Int64
    ) throws -> BudgetSpent? {
        guard policy(of: target) != nil else { return nil }
        let day: Int64 = 86400
        let recent = try tx.issued(device: device).map(\.issuedAt).filter { $0 > now - day }.sorted()
        if recent.count >= budget.perDevicePerDay {
            // When the oldest of the last `perDevicePerDay` leaves the window, one more fits.
            let retryAt = recent[recent.count - budget.perDevicePerDay] + day
            return BudgetSpent(
                scope: "device",
                reason:
                    "issuance budget: \(recent.count) certificates issued to this device in 24 h "
                    + "(issuance.perDevicePerDay \(budget.perDevicePerDay)); waiting until \(retryAt)",
                retryAt: max(retryAt, now + 1))
        }
        let fleet = try tx.issuedCount(since: now - 3600 + 1)
        if fleet >= budget.fleetPerHour {
            // Looked at again in a minute or two (spread, so the devices waiting do not all ask at once).
            let retryAt = now + 60 + Int64.random(in: 0..<60)
            return BudgetSpent(
                scope: "fleet",
                reason:
                    "issuance budget: \(fleet) certificates issued to the fleet in the last hour "
                    + "(issuance.fleetPerHour \(budget.fleetPerHour)); waiting until \(retryAt)",
                retryAt: retryAt)
        }
        return nil
    }

    // MARK: The CSR

    /// Checks a device's CSR message against the keygen bundle it answers and issues the certificate. Throws the
    /// reason the rotation fails with; nothing is issued (or learned) then. Under `attestation: learn` the device's
    /// learned identity is read from `tx` and, when the answer records or pins it, saved there; a key pinned now is
    /// returned with the certificate, for the audit log.
    func issue(
        for message: CSRMessage, rotation: Rotation, keygen bundle: BundleRecord, now: Int64, tx: any StoreTransaction
    ) throws -> (certificate: IssuedCertificate, pinned: LearnedIdentity?) {
        guard let policy = policy(of: rotation.target) else {
            throw CertrotError(.invalidConfig, "no clientCerts policy \(rotation.target)")
        }
        let claims = try bundle.claims()
        guard let keygen = claims.ops.first(where: { $0.op == .keygen }), let tag = keygen.tag else {
            throw CertrotError(.invalidCSR, "bundle \(bundle.jti) asked for no keygen")
        }
        guard message.tag == tag else {
            throw CertrotError(.invalidCSR, "the CSR is for sec tag \(message.tag); the keygen asked for \(tag)")
        }
        let output = try KeygenOutput.parse(message.keygen)
        // A registered identity wins; else one pinned in the store (by `certrot enroll`, or learned and pinned).
        var identity = identities[DeviceKey(rotation.device)]
        // (Under `attestation: learn` a pinned key is checked by the learned-identity path below, as ever.)
        if identity == nil, !policy.learnsIdentity, let learned = try tx.learnedIdentity(device: rotation.device),
            let key = learned.key.flatMap(Hex.decode),
            let publicKey = try? P256.Signing.PublicKey(x963Representation: key)
        {
            identity = DeviceIdentity(key: publicKey, uuid: learned.uuid)
        }
        var learned: LearnedIdentity.Outcome?
        if identity == nil, policy.learnsIdentity {
            learned = try LearnedIdentity.check(
                output, device: rotation.device, secTag: tag, learned: try tx.learnedIdentity(device: rotation.device),
                now: now)
        } else {
            if identity == nil, policy.attestationRequired {
                throw CertrotError(
                    .badAttestation, "attestation is required and the device has no registered identity key")
            }
            try output.verify(identityKey: identity?.key, secTag: tag, uuid: identity?.uuid)
        }
        let issued: ClientCertificateIssuer.Issued
        do {
            issued = try policy.issuer.issuer.issue(
                for: output.publicKey, commonName: policy.commonName(for: rotation.device),
                now: Date(timeIntervalSince1970: TimeInterval(now)))
        } catch {
            throw CertrotError(.invalidCSR, "issuing failed: \(error)")
        }
        let pem = policy.issuer.chainPEM.isEmpty ? issued.pem : issued.pem + policy.issuer.chainPEM
        let certificate = IssuedCertificate(
            issuer: policy.issuer.name, serial: issued.serial, device: rotation.device, policy: policy.name, tag: tag,
            keygenJTI: bundle.jti, sha256: Hex.sha256(Array(pem.utf8)),
            pem: pem, notBefore: Int64(issued.notBefore.timeIntervalSince1970),
            notAfter: Int64(issued.notAfter.timeIntervalSince1970), issuedAt: now)
        switch learned {
        case .firstSeen(let identity):
            try tx.saveLearnedIdentity(identity)
            return (certificate, nil)
        case .pinned(let identity):
            try tx.saveLearnedIdentity(identity)
            return (certificate, identity)
        case .verified, nil:
            return (certificate, nil)
        }
    }

    // MARK: Revocation

    /// The device is verified using the certificate `rotation` installed: it is `active`, and every other
    /// certificate certrot issued to the device under this policy is revoked (superseded).
    package func verified(_ rotation: Rotation, tx: any StoreTransaction, now: Int64) throws -> [IssuedCertificate] {
        guard let policy = policy(of: rotation.target) else { return [] }
        var revoked: [IssuedCertificate] = []
        for var certificate in try tx.issued(device: rotation.device) where certificate.policy == policy.name {
            let before = certificate
            if certificate.sha256 == rotation.sha256 {
                certificate.state = .active
            } else if certificate.state != .revoked {
                certificate.state = .revoked
                certificate.revokedAt = now
                if policy.issuer.crlPath != nil { crlsDue.insert(certificate.issuer) }
                revoked.append(certificate)
            }
            if certificate != before { try tx.saveIssued(certificate) }
        }
        return revoked
    }

    /// Rewrites the CRLs due (and any a day old), from the store: the file is replaced atomically, so mosquitto's
    /// `crlfile` never reads half of one.
    package func writeCRLs(store: any RotationStore, now: Int64) {
        for policy in policies where policy.issuer.crlPath != nil {
            if now - (crlWrittenAt[policy.issuer.name] ?? .min / 2) >= Self.crlRefresh {
                crlsDue.insert(policy.issuer.name)
            }
        }
        guard !crlsDue.isEmpty else { return }
        for name in crlsDue.sorted() {
            guard let issuer = policies.first(where: { $0.issuer.name == name })?.issuer, let path = issuer.crlPath
            else { continue }
            do {
                // A certificate that has expired is no longer listed (RFC 5280 §3.3): the CRL stays the size of
                // the revocations that still matter, not of every one ever made.
                let revoked = try store.read { tx in try tx.revoked(issuer: name) }.filter { $0.notAfter > now }
                crlNumber = max(crlNumber + 1, now)
                let pem = try RevocationList.make(
                    issuer: issuer.issuer.certificate, key: issuer.issuer.key,
                    entries: revoked.compactMap { certificate in
                        Hex.decode(certificate.serial).map {
                            RevocationList.Entry(
                                serial: $0,
                                revokedAt: Date(timeIntervalSince1970: TimeInterval(certificate.revokedAt ?? now)))
                        }
                    }, number: crlNumber, thisUpdate: Date(timeIntervalSince1970: TimeInterval(now)),
                    nextUpdate: Date(timeIntervalSince1970: TimeInterval(now + Self.crlValidity)))
                try pem.write(toFile: path, atomically: true, encoding: .utf8)
                crlWrittenAt[name] = now
                crlsDue.remove(name)
                logger.info(
                    "CRL written", metadata: ["issuer": "\(name)", "path": "\(path)", "revoked": "\(revoked.count)"])
            } catch {
                logger.error("CRL not written", metadata: ["issuer": "\(name)", "error": "\(error)"])
            }
        }
    }
}

import CertrotCore
import Crypto
import Foundation
import X509

/// How a simulated device misbehaves, drawn once per device.
public struct DeviceBehaviour: Sendable, Equatable {
    /// Rejects every bundle (as if its pinned key were wrong).
    public var rejects = false
    /// The first write fails with a modem error; later ones succeed.
    public var failsOnce = false
    /// Comes online only after the fleet's offline delay.
    public var offlineAtFirst = false
    /// Loses one part of its first multi-part bundle and asks for it with an `incomplete` ack.
    public var losesPartOnce = false
    /// Cannot connect with a newly activated tag: goes back to the old one and acks `failed` (`activate_failed`).
    public var activationFails = false
    /// Publishes a CSR for its keygen whose attestation is signed by another key than its identity key.
    public var forgesAttestation = false
    /// Its modem encodes the CSR's signature algorithm without NULL parameters (RFC 5758), unlike every real
    /// answer published so far, which carries them.
    public var csrWithoutNull = false
    /// Reports its active client certificate as expiring a day from now, whatever it holds: the red-team's device
    /// that tried to make certrot sign in a loop (#32, finding 3; `certrot-lab hostile-issuance`).
    public var claimsEarlyExpiry = false

    public init(
        rejects: Bool = false, failsOnce: Bool = false, offlineAtFirst: Bool = false, losesPartOnce: Bool = false,
        activationFails: Bool = false, forgesAttestation: Bool = false, csrWithoutNull: Bool = false,
        claimsEarlyExpiry: Bool = false
    ) {
        self.claimsEarlyExpiry = claimsEarlyExpiry
        self.rejects = rejects
        self.failsOnce = failsOnce
        self.offlineAtFirst = offlineAtFirst
        self.losesPartOnce = losesPartOnce
        self.activationFails = activationFails
        self.forgesAttestation = forgesAttestation
        self.csrWithoutNull = csrWithoutNull
    }
}

/// One simulated nRF91 application: a credential store of sec tags, the applied seq, part reassembly, and the
/// checks docs/protocol.md asks of a device. Pure: the fleet does the MQTT.
public struct SimulatedDevice: Sendable {
    public struct Key: Hashable, Sendable {
        public var tag: Int64
        public var type: Int
    }

    public let id: String
    public var behaviour: DeviceBehaviour
    public let profile: DeviceProfile
    public private(set) var credentials: [Key: [UInt8]] = [:]
    public private(set) var appliedSeq: Int64 = 0
    public private(set) var lastAppliedJTI: String?
    /// Every seq this device applied, in order (tests check none repeats).
    public private(set) var appliedSeqs: [Int64] = []
    public private(set) var writeFailures = 0
    public private(set) var partsLost = 0
    public private(set) var lastPartAt: Double = 0
    private var incompleteAsks = 0
    private var rejectedJTI: String?
    var assembler: PartAssembler
    /// Lists `"cose"` in its inventory's `formats` and takes compact bundles (docs/protocol.md §12).
    public var takesCompact = false
    /// Compact bundles applied (the others were JWS).
    public private(set) var compactApplied = 0

    /// The pinned bundle-verification keys; `trust_key` ops add to them.
    public private(set) var trustedKeys: [VerificationKey]
    /// The modem's identity key and the keys it generated; nil for a device without client-certificate renewal.
    public private(set) var modem: SimulatedModem?
    /// The sec tag the device's connection uses (reported as `active`); nil without a modem identity.
    public private(set) var activeTag: Int64?
    /// CSR messages to publish on `{id}/certs/csr` before the ack of the bundle that asked for them.
    public private(set) var outgoingCSRs: [CSRMessage] = []
    /// Whether a connection with this client certificate chain and key would succeed (nil: it would). The fleet
    /// sets it to try a TLS listener for real.
    public var connectionCheck: (@Sendable (_ certificate: String, _ key: String) -> Bool)?

    public init(id: String, behaviour: DeviceBehaviour, profile: DeviceProfile, keys: [VerificationKey]) {
        self.id = id
        self.behaviour = behaviour
        self.profile = profile
        self.trustedKeys = keys
        // A JWS carrying a full credential, base64url-encoded with JSON escaping, stays under 3× its size.
        self.assembler = PartAssembler(capacity: profile.maxCredential * 3 + 2048)
    }

    public mutating func provision(tag: Int64, type: Int, pem: [UInt8]) {
        credentials[Key(tag: tag, type: type)] = pem
    }

    /// Gives the device a modem identity (for `keygen`) and a working client identity in `tag`: `certificate`
    /// as type 1 there and its key in the modem; `tag` becomes the active one.
    public mutating func provisionIdentity(
        modem: SimulatedModem, tag: Int64, certificate: [UInt8], key: P256.Signing.PrivateKey
    ) {
        var modem = modem
        modem.install(key: key, tag: tag)
        self.modem = modem
        credentials[Key(tag: tag, type: 1)] = certificate
        activeTag = tag
    }

    /// The CSRs the device has to publish, taken once.
    public mutating func takeCSRs() -> [CSRMessage] {
        defer { outgoingCSRs = [] }
        return outgoingCSRs
    }

    /// The PEM of the key the modem holds in `tag` (a real modem never gives it out; tests connect with it).
    public func keyPEM(tag: Int64) -> String? { modem?.keys[tag]?.pemRepresentation }

    public func digest(tag: Int64, type: Int = 0) -> String? {
        credentials[Key(tag: tag, type: type)].map(Hex.sha256)
    }

    /// The inventory as the device would build it from `AT%CMNG=1` digests and `AT%CERTEXPIRY`.
    public var inventory: Inventory {
        let creds = credentials.sorted { ($0.key.tag, $0.key.type) < ($1.key.tag, $1.key.type) }.map { key, pem in
            let claimed =
                behaviour.claimsEarlyExpiry && key.type == 1 && key.tag == activeTag
                ? Int64(Date().timeIntervalSince1970) + 86400 : nil
            return Inventory.Credential(
                tag: key.tag, type: key.type, sha256: Hex.sha256(pem),
                notAfter: claimed ?? (try? PEM.normalizeChain(String(decoding: pem, as: UTF8.self)))?.notAfter)
        }
        return Inventory(
            seq: appliedSeq, maxMessage: profile.maxMessage, creds: creds, keys: trustedKeys.map(\.kid),
            active: activeTag, formats: takesCompact ? [CompactBundle.format] : nil)
    }

    public enum Reaction: Sendable, Equatable {
        /// Nothing to say yet (waiting for more parts, or a part dropped on purpose).
        case none
        /// Publish this ack; `republishInventory` after a successful write.
        case ack(Ack, republishInventory: Bool)
        /// The message was larger than the device can take (its TLS buffer): dropped.
        case oversize(bytes: Int)
    }

    /// Handles one message on `{id}/certs`.
    public mutating func receive(topic: String, payload: [UInt8], now: Double) -> Reaction {
        let packet = Parts.publishPacketSize(topicBytes: topic.utf8.count, payloadBytes: payload.count)
        guard packet <= profile.maxMessage else { return .oversize(bytes: packet) }
        // A compact part (first byte 0x84, docs/protocol.md §12) goes through the same reassembly, its data as hex
        // (hex of slices, concatenated, is hex of the whole; base64 is not).
        let compact = payload.first == 0x84
        if compact && !takesCompact { return .none }
        let parsed: BundlePart? =
            compact
            ? (try? CompactParts.parse(payload)).map {
                BundlePart(jti: Hex.encode($0.jti), part: $0.part, parts: $0.parts, data: Hex.encode($0.data))
            } : try? BundlePart.parse(payload)
        guard let part = parsed, part.jti != rejectedJTI else { return .none }
        lastPartAt = now
        if behaviour.losesPartOnce, partsLost == 0, part.parts > 1 {
            partsLost += 1
            return .none
        }
        switch assembler.add(part) {
        case .waiting:
            return .none
        case .tooLarge(let bytes):
            assembler.reset()
            // Later parts of this bundle are dropped, so it is rejected once, not once per remaining part.
            rejectedJTI = part.jti
            return .ack(
                Ack(jti: part.jti, status: .rejected, reason: "bundle of \(bytes) bytes does not fit"),
                republishInventory: false)
        case .complete(let jws):
            incompleteAsks = 0
            if compact {
                guard let cose = Hex.decode(jws) else { return .none }
                return apply(compact: cose, partJTI: part.jti, now: Int64(now))
            }
            return apply(jws: jws, partJTI: part.jti, now: Int64(now))
        }
    }

    /// Called periodically: asks for missing parts once a bundle has stalled for `after` seconds, at most
    /// `maxAsks` times, then gives the partial bundle up (a late duplicate part must not start an endless loop).
    public mutating func checkStalled(now: Double, after: Double, maxAsks: Int = 3) -> Ack? {
        guard let jti = assembler.jti, now - lastPartAt >= after else { return nil }
        let missing = assembler.missing
        guard !missing.isEmpty else { return nil }
        guard incompleteAsks < maxAsks else {
            assembler.reset()
            incompleteAsks = 0
            return nil
        }
        incompleteAsks += 1
        lastPartAt = now
        return Ack(jti: jti, status: .incomplete, missing: missing)
    }

    /// A compact bundle: decoded strictly, signature and digests verified, then applied as a JWS's claims.
    mutating func apply(compact cose: [UInt8], partJTI: String, now: Int64) -> Reaction {
        let keys = trustedKeys
        let written = appliedSeqs.count
        let reaction = apply(
            unverified: (try? CompactBundle.decode(cose))?.claims,
            verifies: { (try? CompactBundle.verify(cose, keys: keys)) != nil }, partJTI: partJTI, now: now
        ) { check throws(CertrotError) in try check.check(compact: cose) }
        // Applied now, not acknowledged again (a redelivered bundle already applied is not written twice).
        if appliedSeqs.count > written, case .ack(let ack, _) = reaction, ack.status == .applied { compactApplied += 1 }
        return reaction
    }

    mutating func apply(jws: String, partJTI: String, now: Int64) -> Reaction {
        let keys = trustedKeys
        // Decoded once; the signature is verified once, by the duplicate check or by BundleCheck.
        let decoded = try? JWS.decode(jws)
        return apply(
            unverified: decoded?.claims,
            verifies: { decoded.map { (try? JWS.verify($0, keys: keys)) != nil } ?? false },
            partJTI: partJTI, now: now
        ) { check throws(CertrotError) in
            if let decoded { try check.check(decoded) } else { try check.check(jws) }
        }
    }

    /// A reassembled bundle of either format: `unverified` its claims as decoded, `verifies` its signature check
    /// (made only for a bundle already applied, which is acknowledged again, not re-written: a re-send after a
    /// server restart), `check` the device checks.
    mutating func apply(
        unverified: BundleClaims?, verifies: () -> Bool, partJTI: String, now: Int64,
        check: (BundleCheck) throws(CertrotError) -> BundleClaims
    ) -> Reaction {
        if let unverified, unverified.jti == lastAppliedJTI, unverified.sub == id, verifies() {
            return .ack(Ack(jti: unverified.jti, status: .applied), republishInventory: true)
        }
        let jti = unverified?.jti ?? partJTI
        if behaviour.rejects {
            return .ack(
                Ack(jti: jti, status: .rejected, code: -1, reason: "simulated rejection"), republishInventory: false)
        }
        let claims: BundleClaims
        do {
            claims = try check(
                BundleCheck(device: id, keys: trustedKeys, profile: profile, appliedSeq: appliedSeq, now: now))
        } catch {
            return .ack(Ack(jti: jti, status: .rejected, reason: error.description), republishInventory: false)
        }
        return apply(checked: claims)
    }

    /// Writes what a checked bundle says, as the application does with `AT%CMNG` (and `AT%KEYGEN`).
    mutating func apply(checked claims: BundleClaims) -> Reaction {
        if behaviour.failsOnce, writeFailures == 0 {
            writeFailures += 1
            // AT%CMNG answers ERROR 518 when the modem is not offline; the code is informational (docs/protocol.md §6).
            return .ack(
                Ack(jti: claims.jti, status: .failed, code: 518, reason: "simulated write failure"),
                republishInventory: false)
        }
        let before = (credentials, modem, activeTag, trustedKeys)
        for op in claims.ops {
            switch op.op {
            case .write: credentials[Key(tag: op.tag ?? 0, type: op.type ?? 0)] = Array((op.pem ?? "").utf8)
            case .delete: credentials[Key(tag: op.tag ?? 0, type: op.type ?? 0)] = nil
            case .trustKey:
                if let jwk = op.jwk, let key = try? VerificationKey(jwk: jwk), !trustedKeys.contains(key) {
                    trustedKeys.append(key)
                }
            case .keygen, .activate:
                if let failure = clientIdentity(op, jti: claims.jti) {
                    // A modem error leaves the store as it was before the bundle (the old tag untouched).
                    (credentials, modem, activeTag, trustedKeys) = before
                    outgoingCSRs = []
                    return .ack(failure, republishInventory: false)
                }
            }
        }
        appliedSeq = claims.seq
        appliedSeqs.append(claims.seq)
        lastAppliedJTI = claims.jti
        return .ack(Ack(jti: claims.jti, status: .applied), republishInventory: true)
    }

    /// `keygen` (delete the tag's types 0/1/2, generate a key there, queue the CSR) and `activate` (connect with the
    /// tag, keep it only if that works); the `failed` ack when the modem or the connection says no.
    mutating func clientIdentity(_ op: BundleOp, jti: String) -> Ack? {
        guard var modem, let tag = op.tag else {
            return Ack(jti: jti, status: .failed, reason: "this device has no modem identity")
        }
        defer { self.modem = modem }
        switch op.op {
        case .keygen:
            // The application takes the modem offline (CFUN=4) to write credentials, as a real nRF91 must.
            modem.online = false
            modem.nullSignatureParameters = !behaviour.csrWithoutNull
            for type in 0...2 { credentials[Key(tag: tag, type: type)] = nil }
            do {
                try modem.deleteKey(tag: tag)
                let output = try modem.keygen(
                    tag: tag, subject: op.subject,
                    attestationKey: behaviour.forgesAttestation ? P256.Signing.PrivateKey() : nil)
                outgoingCSRs.append(CSRMessage(jti: jti, tag: tag, keygen: output))
            } catch SimulatedModem.Failure.online {
                return Ack(jti: jti, status: .failed, code: 518, reason: "AT%KEYGEN: modem online")
            } catch SimulatedModem.Failure.tagInUse {
                return Ack(jti: jti, status: .failed, code: 519, reason: "AT%KEYGEN: tag holds a key")
            } catch {
                return Ack(jti: jti, status: .failed, reason: "AT%KEYGEN: \(error)")
            }
        case .activate:
            let certificate = credentials[Key(tag: tag, type: 1)].map { String(decoding: $0, as: UTF8.self) }
            guard !behaviour.activationFails, let certificate, let key = modem.keys[tag],
                Self.certificate(certificate, matches: key.publicKey),
                connectionCheck?(certificate, key.pemRepresentation) ?? true
            else {
                return Ack(jti: jti, status: .failed, reason: "activate_failed")
            }
            activeTag = tag
        default:
            break
        }
        return nil
    }

    static func certificate(_ pem: String, matches key: P256.Signing.PublicKey) -> Bool {
        guard let leaf = try? Certificate(pemEncoded: pem) else { return false }
        return leaf.publicKey == Certificate.PublicKey(key)
    }
}

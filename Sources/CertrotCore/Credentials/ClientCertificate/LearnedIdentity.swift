import Crypto

/// A modem identity key learned on first use (`attestation: learn`, docs/client-certificates.md): the first attested
/// KEYGEN answer of a device leaves two candidate keys (ECDSA public-key recovery, ``IdentityKeyRecovery``); each
/// later answer must verify under one of them, and the first that verifies under exactly one pins it.
public struct LearnedIdentity: Sendable, Equatable {
    public var device: String
    /// The modem's device UUID, as its first answer attested it.
    public var uuid: [UInt8]
    /// Uncompressed P-256 points, lowercase hex: the candidates until pinned, then the one key.
    public var candidates: [String]
    public var firstSeenAt: Int64
    /// When one candidate was left: from then on it is the device's identity key.
    public var pinnedAt: Int64?

    public init(device: String, uuid: [UInt8], candidates: [String], firstSeenAt: Int64, pinnedAt: Int64? = nil) {
        self.device = device
        self.uuid = uuid
        self.candidates = candidates
        self.firstSeenAt = firstSeenAt
        self.pinnedAt = pinnedAt
    }

    /// The pinned key (hex), nil while there are candidates.
    public var key: String? { pinnedAt == nil ? nil : candidates.first }

    /// The decision for one attested KEYGEN answer of `device` for `secTag`, given what was learned before.
    public enum Outcome: Sendable, Equatable {
        /// The first answer: its candidates are recorded, and the answer is taken (trust on first use).
        case firstSeen(LearnedIdentity)
        /// It verifies under the one candidate left: the key is pinned now.
        case pinned(LearnedIdentity)
        /// It verifies under the learned key (or under every candidate still open): nothing to record.
        case verified
    }

    /// Checks `output` against `learned`; throws `bad_attestation` when it carries no attestation, is for another
    /// sec tag or another modem, or is signed by none of the keys learned for the device.
    public static func check(
        _ output: KeygenOutput, device: String, secTag: Int64, learned: LearnedIdentity?, now: Int64
    ) throws(CertrotError) -> Outcome {
        guard let cose = output.cose, let attestation = output.attestation else {
            throw CertrotError(.badAttestation, "attestation: learn takes only attested KEYGEN answers")
        }
        guard attestation.secTag == secTag else {
            throw CertrotError(.badAttestation, "the key was generated in sec tag \(attestation.secTag), not \(secTag)")
        }
        guard let learned else {
            let candidates = IdentityKeyRecovery.candidates(cose)
            guard !candidates.isEmpty else {
                throw CertrotError(.badAttestation, "the attestation's signature admits no public key")
            }
            return .firstSeen(
                LearnedIdentity(
                    device: device, uuid: attestation.uuid,
                    candidates: candidates.map { Hex.encode($0.x963Representation) }, firstSeenAt: now))
        }
        guard attestation.uuid == learned.uuid else {
            throw CertrotError(
                .badAttestation,
                "the attestation names modem \(ModemUUID.format(attestation.uuid)); the device's first answer named "
                    + ModemUUID.format(learned.uuid))
        }
        let fitting = learned.candidates.filter { hex in
            guard let bytes = Hex.decode(hex), let key = try? P256.Signing.PublicKey(x963Representation: bytes) else {
                return false
            }
            return cose.isValid(for: key)
        }
        guard !fitting.isEmpty else {
            throw CertrotError(
                .badAttestation,
                learned.pinnedAt == nil
                    ? "the attestation is signed by neither identity key the device's first answer allows"
                    : "the attestation does not verify under the device's learned identity key")
        }
        guard learned.pinnedAt == nil, fitting.count == 1 else { return .verified }
        var pinned = learned
        pinned.candidates = fitting
        pinned.pinnedAt = now
        return .pinned(pinned)
    }
}

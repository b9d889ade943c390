/// The checks a device makes before it writes anything (docs/protocol.md, "Device checks"). Shared by the
/// reference simulator and `certrot bundle inspect`.
public struct BundleCheck: Sendable {
    public var device: String
    public var keys: [VerificationKey]
    public var profile: DeviceProfile
    /// Highest seq the device has applied.
    public var appliedSeq: Int64
    /// Current time in Unix seconds, when the device knows it.
    public var now: Int64?
    /// Tolerated clock skew for `iat`.
    public var skew: Int64 = 300

    public init(device: String, keys: [VerificationKey], profile: DeviceProfile, appliedSeq: Int64, now: Int64?) {
        self.device = device
        self.keys = keys
        self.profile = profile
        self.appliedSeq = appliedSeq
        self.now = now
    }

    /// Verifies and checks a bundle; throws with the reason a device puts in a `rejected` ack.
    public func check(_ jws: String) throws(CertrotError) -> BundleClaims {
        try check(JWS.decode(jws))
    }

    /// The same checks for a JWS already decoded (with ``JWS/decode(_:)``), which is not decoded again.
    public func check(_ decoded: JWS.Decoded) throws(CertrotError) -> BundleClaims {
        try check(claims: JWS.verify(decoded, keys: keys).claims)
    }

    /// The same checks for a compact bundle (docs/protocol.md §12): decoded strictly, signature and digests
    /// verified, then the claims as for a JWS.
    public func check(compact cose: [UInt8]) throws(CertrotError) -> BundleClaims {
        try check(claims: CompactBundle.verify(cose, keys: keys).claims)
    }

    /// The checks of the claims of a bundle whose signature verified.
    func check(claims: BundleClaims) throws(CertrotError) -> BundleClaims {
        guard claims.sub == device else {
            throw CertrotError(.invalidBundle, "bundle is for \(claims.sub), not \(device)")
        }
        guard claims.seq > appliedSeq else {
            throw CertrotError(.invalidBundle, "seq \(claims.seq) is not above the applied seq \(appliedSeq)")
        }
        if let now {
            guard claims.exp > now else { throw CertrotError(.invalidBundle, "bundle expired at \(claims.exp)") }
            guard claims.iat <= now + skew else {
                throw CertrotError(.invalidBundle, "bundle issued in the future (iat \(claims.iat))")
            }
        }
        guard !claims.ops.isEmpty else { throw CertrotError(.invalidBundle, "bundle has no ops") }
        for op in claims.ops {
            try Self.checkOp(op, profile: profile)
        }
        return claims
    }

    public static func checkOp(_ op: BundleOp, profile: DeviceProfile) throws(CertrotError) {
        if op.op == .trustKey {
            guard let jwk = op.jwk, let kid = op.kid else {
                throw CertrotError(.invalidBundle, "trust_key op lacks jwk or kid")
            }
            guard try VerificationKey(jwk: jwk).kid == kid else {
                throw CertrotError(.invalidBundle, "trust_key kid is not the thumbprint of its jwk")
            }
            return
        }
        if op.op == .keygen || op.op == .activate {
            guard let tag = op.tag, (0...Inventory.maxTag).contains(tag), op.type == nil, op.pem == nil else {
                throw CertrotError(
                    .invalidBundle, "\(op.op.rawValue) op needs a tag in 0…\(Inventory.maxTag) and no type or pem")
            }
            if op.op == .keygen {
                guard let subject = op.subject, !subject.isEmpty, subject.utf8.count <= BundleOp.maxSubjectBytes,
                    !subject.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") })
                else {
                    throw CertrotError(
                        .invalidBundle,
                        "keygen op needs a subject of 1…\(BundleOp.maxSubjectBytes) bytes without quotes or controls")
                }
            }
            return
        }
        guard let tag = op.tag, let type = op.type, (0...Inventory.maxTag).contains(tag),
            CredentialType(rawValue: type) != nil
        else {
            throw CertrotError(
                .invalidBundle,
                "op on tag \(op.tag.map(String.init) ?? "-") type \(op.type.map(String.init) ?? "-") is out of range")
        }
        guard op.op == .write else { return }
        guard let pem = op.pem, let sha = op.sha256 else {
            throw CertrotError(.invalidBundle, "write op on tag \(tag) lacks pem or sha256")
        }
        let bytes = Array(pem.utf8)
        try profile.checkCredentialSize(bytes, what: "credential for tag \(tag)")
        guard PEM.isNormalized(bytes) else {
            throw CertrotError(.invalidPEM, "credential for tag \(tag) breaks the PEM rules")
        }
        guard Hex.sha256(bytes) == sha else {
            throw CertrotError(.invalidBundle, "sha256 of tag \(tag) does not match its pem")
        }
    }
}

import CertrotCore

/// What `device.status` and `device.list` say of a device's client identity under a `clientCerts` policy: the
/// tag it connects with and the certificate there, with what certrot issued when it issued it.
package struct ClientIdentityStatus: Codable, Sendable, Equatable {
    package var policy: String
    package var activeTag: Int64
    /// SHA-256 of the type-1 credential in the active tag, when the inventory lists one.
    package var sha256: String?
    /// Set when certrot issued the certificate in use.
    package var issuer: String?
    package var serial: String?
    package var notAfter: Int64?
    /// The certificate in use expires within the policy's `renewBefore`.
    package var expiringSoon: Bool

    /// A `clientCerts` policy as the read-only RPC methods need it.
    package struct Policy: Sendable {
        package var name: String
        package var tags: [Int64]
        package var renewBefore: Int64
        /// `attestation: learn`.
        package var learnsIdentity = false
    }

    /// The identity of a device whose inventory reports an `active` tag of one of `policies`; nil otherwise.
    /// `issued`: the certificates certrot issued to the device (``StoreTransaction/issued(device:)``).
    static func of(
        inventory: Inventory?, issued: () throws -> [IssuedCertificate], policies: [Policy], now: Int64
    ) rethrows -> ClientIdentityStatus? {
        guard let inventory, let active = inventory.active,
            let policy = policies.first(where: { $0.tags.contains(active) })
        else { return nil }
        let held = inventory.credential(tag: active, type: CredentialType.clientCertificate.rawValue)
        let known = try held.flatMap { held in try issued().last { $0.sha256 == held.sha256 } }
        let notAfter = held?.notAfter ?? known?.notAfter
        return ClientIdentityStatus(
            policy: policy.name, activeTag: active, sha256: held?.sha256, issuer: known?.issuer,
            serial: known?.serial ?? held?.serial, notAfter: notAfter,
            expiringSoon: notAfter.map { $0 <= now.saturatingAdd(policy.renewBefore) } ?? false)
    }
}

/// One certificate certrot issued, as `device.status` lists it.
package struct IssuedCertificateEntry: Codable, Sendable, Equatable {
    package var policy: String
    package var issuer: String
    package var serial: String
    package var tag: Int64
    package var sha256: String
    package var notBefore: Int64
    package var notAfter: Int64
    package var issuedAt: Int64
    package var state: String
    package var revokedAt: Int64?

    init(_ c: IssuedCertificate) {
        self.init(
            policy: c.policy, issuer: c.issuer, serial: c.serial, tag: c.tag, sha256: c.sha256, notBefore: c.notBefore,
            notAfter: c.notAfter, issuedAt: c.issuedAt, state: c.state.rawValue, revokedAt: c.revokedAt)
    }

    package init(
        policy: String, issuer: String, serial: String, tag: Int64, sha256: String, notBefore: Int64, notAfter: Int64,
        issuedAt: Int64, state: String, revokedAt: Int64?
    ) {
        self.policy = policy
        self.issuer = issuer
        self.serial = serial
        self.tag = tag
        self.sha256 = sha256
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.issuedAt = issuedAt
        self.state = state
        self.revokedAt = revokedAt
    }
}

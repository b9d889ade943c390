import CertrotCore

/// The bundle-signing key (docs/protocol.md §4, `trust_key`): while a key rotation is configured, every device
/// that reports the keys it trusts is sent the next key, and a device that trusts it gets bundles signed with it.
package final class SigningKeyKind: CredentialKind {
    let current: SigningKey
    var next: SigningKey?

    init(current: SigningKey, next: SigningKey? = nil) {
        self.current = current
        self.next = next
    }

    package func owns(_ target: RotationTarget) -> Bool { target == .signingKey }

    package func slot(of target: RotationTarget, in world: KindContext) -> TagKey? { nil }

    package func desired(inventory: Inventory, in world: KindContext) -> [DesiredCredential] {
        SigningKeyDesiredState.desired(inventory: inventory, nextKid: next?.kid).map { [$0] } ?? []
    }

    package func ops(for rotation: Rotation, in world: KindContext) -> [BundleOp]? {
        guard let next, rotation.sha256 == next.kid else { return nil }
        return [.trustKey(next.publicKey)]
    }

    /// The key that signs a bundle for a device with this inventory: the next key once the device trusts it.
    func signer(for inventory: Inventory?) -> SigningKey {
        next.flatMap { next in inventory?.keys?.contains(next.kid) == true ? next : nil } ?? current
    }
}

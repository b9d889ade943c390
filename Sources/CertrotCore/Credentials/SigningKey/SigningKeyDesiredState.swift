/// The next bundle-signing key (`trust_key` op): what a device that reports the keys it trusts should hold.
public enum SigningKeyDesiredState {
    /// The next key, by kid, for a device whose inventory lists `keys`; nothing while no key rotation is
    /// configured, or for a device that does not report keys (it could never show it holds one).
    public static func desired(inventory: Inventory, nextKid: String?) -> DesiredCredential? {
        guard let nextKid, let keys = inventory.keys else { return nil }
        return DesiredCredential(
            target: .signingKey, sha256: nextKid, holds: keys.contains(nextKid),
            why: "device does not trust the next signing key")
    }
}

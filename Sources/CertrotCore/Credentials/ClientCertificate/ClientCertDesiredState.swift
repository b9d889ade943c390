/// What a device should hold under a client-certificate policy (docs/protocol.md §11), worked out from its
/// inventory, the policy's rotation and the expiry of the certificate it uses now. Pure: the kind gathers the
/// inputs, this decides.
public enum ClientCertDesiredState {
    /// The policy's rotation as it stands.
    public struct Current: Sendable, Equatable {
        public var sha256: String
        public var state: RotationState

        public init(sha256: String, state: RotationState) {
            self.sha256 = sha256
            self.state = state
        }
    }

    /// - Parameters:
    ///   - tags: the policy's two sec tags; a device whose `active` is neither is not the policy's.
    ///   - activeNotAfter: when the certificate in the active tag expires, if known (the inventory's `notAfter`,
    ///     else the store's record of a certificate certrot issued).
    ///   - renewBefore: seconds before that expiry a new identity is generated.
    public static func desired(
        target: RotationTarget, tags: [Int64], inventory: Inventory, activeNotAfter: Int64?, renewBefore: Int64,
        current: Current?, now: Int64
    ) -> DesiredCredential? {
        guard let active = inventory.active, tags.contains(active) else { return nil }
        let held = inventory.credential(tag: active, type: 1)?.sha256
        let expiring = activeNotAfter.map { $0 <= now.saturatingAdd(renewBefore) } ?? false
        let renew = DesiredCredential(
            target: target, sha256: Rotation.digestUnknown, holds: false,
            why: "client certificate in tag \(active) expires within renewBefore")
        guard let current else { return expiring ? renew : nil }
        if current.sha256 == Rotation.digestUnknown {
            // The keygen phase: nothing to hold yet. Cancelled (its campaign aborted): again only once due.
            return current.state == .cancelled && !expiring ? nil : renew
        }
        let verifiedInUse = current.state == .verified && held == current.sha256
        if verifiedInUse, expiring {
            return renew  // the certificate issued last is the one expiring now: a new identity
        }
        if !verifiedInUse, current.state == .verified, held != nil, expiring {
            // The device uses another certificate than the one issued last (re-provisioned): renew from it.
            return renew
        }
        return DesiredCredential(
            target: target, sha256: current.sha256, holds: held == current.sha256,
            why: "client certificate \(current.sha256.prefix(12)) issued, to be activated in its tag")
    }
}

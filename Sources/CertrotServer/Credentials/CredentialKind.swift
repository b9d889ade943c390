import CertrotCore

/// What the engine needs to know of one kind of credential (in the spirit of swift-certificates'
/// `VerifierPolicy`): the engine asks every kind, in order, and knows none of them by name.
///
/// A kind works out what a device should hold from its inventory (a pure function in CertrotCore, so that it
/// is tested alone), names the slot a target writes (campaigns take slots over), and gives the bundle op that
/// installs a rotation's credential. Its targets are cases of ``RotationTarget``. See docs/architecture.md,
/// "Adding a kind of credential".
package protocol CredentialKind: AnyObject {
    /// Whether `target` is one of this kind's.
    func owns(_ target: RotationTarget) -> Bool

    /// The sec tag and type `target` writes, when it writes one.
    func slot(of target: RotationTarget, in world: KindContext) -> TagKey?

    /// What the device whose inventory this is should hold.
    func desired(inventory: Inventory, in world: KindContext) -> [DesiredCredential]

    /// After a device's inventory is saved: what the kind records of it (expiry dates, warnings).
    func inventorySaved(device: String, inventory: Inventory, tx: any StoreTransaction, now: Int64) throws

    /// Topic filters of device messages besides inventories and acks that this kind takes (the engine subscribes to
    /// them, shared in a cluster, and routes them by ``Topics/classify(_:)``).
    var inboundFilters: [String] { get }

    /// A rotation of this kind was just verified (in the transaction that saves it). Returns the certificates
    /// this revoked, for the audit log.
    func verified(_ rotation: Rotation, tx: any StoreTransaction, now: Int64) throws -> [IssuedCertificate]

    /// The ops that install what `rotation` is for, in order; nil when this kind cannot serve it (the rotation
    /// waits, logged).
    func ops(for rotation: Rotation, in world: KindContext) throws -> [BundleOp]?
}

extension CredentialKind {
    package func inventorySaved(device: String, inventory: Inventory, tx: any StoreTransaction, now: Int64) throws {}
    package var inboundFilters: [String] { [] }
    package func verified(_ rotation: Rotation, tx: any StoreTransaction, now: Int64) throws -> [IssuedCertificate] {
        []
    }
}

/// What a kind may look at besides the configuration it was made with: the campaigns the engine runs, and for
/// one device the slots campaigns have taken over on it and its rotations.
package struct KindContext {
    var campaigns: [String: Campaign]
    /// Slot → the rotation target of the newest campaign that admitted the device (``Engine/tagOwners``).
    var owners: [TagKey: RotationTarget] = [:]
    var rotations: [RotationTarget: Rotation] = [:]
    /// The device, and its last inventory, where the engine has them.
    var device: String?
    var inventory: Inventory?
    /// The transaction the engine is in, for what a kind keeps in the store (issued certificates).
    var tx: (any StoreTransaction)?
    var now: Int64 = 0
}

extension [any CredentialKind] {
    func slot(of target: RotationTarget, in world: KindContext) -> TagKey? {
        for kind in self where kind.owns(target) { return kind.slot(of: target, in: world) }
        return nil
    }

    func ops(for rotation: Rotation, in world: KindContext) throws -> [BundleOp]? {
        for kind in self where kind.owns(rotation.target) { return try kind.ops(for: rotation, in: world) }
        return nil
    }
}

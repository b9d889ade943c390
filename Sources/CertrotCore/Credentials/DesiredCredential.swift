/// A sec tag and credential type: the slot in a modem's credential store that one rotation writes.
public struct TagKey: Hashable, Sendable {
    public var tag: Int64
    public var type: Int

    public init(tag: Int64, type: Int) {
        self.tag = tag
        self.type = type
    }
}

/// One thing a device should hold, as a kind of credential works it out from the device's inventory: the
/// engine starts or restarts a rotation for every entry the device does not hold.
public struct DesiredCredential: Sendable, Equatable {
    public var target: RotationTarget
    /// What the target is identified by on the device: a chain's SHA-256, a key's kid.
    public var sha256: String
    /// The device's inventory shows it already.
    public var holds: Bool
    /// Why a rotation starts, for the device's history.
    public var why: String

    public init(target: RotationTarget, sha256: String, holds: Bool, why: String) {
        self.target = target
        self.sha256 = sha256
        self.holds = holds
        self.why = why
    }
}

/// Root CA chains (AT%CMNG type 0): what a device should hold in each tag.
public enum CAChainDesiredState {
    /// A configured target: its name, the slot it writes and the digest of its chain.
    public struct Configured: Sendable, Equatable {
        public var name: String
        public var slot: TagKey
        public var sha256: String

        public init(name: String, slot: TagKey, sha256: String) {
            self.name = name
            self.slot = slot
            self.sha256 = sha256
        }
    }

    /// A slot a campaign has taken over on this device: the campaign's rotation target and the chain it sends
    /// this device (per device: an overlap is composed from what the device held).
    public struct Owner: Sendable, Equatable {
        public var slot: TagKey
        public var target: RotationTarget
        public var sha256: String

        public init(slot: TagKey, target: RotationTarget, sha256: String) {
            self.slot = slot
            self.target = target
            self.sha256 = sha256
        }
    }

    /// In each slot, the chain of the campaign that owns it on this device, else the configured target's.
    /// Configured targets come first, in configuration order, then campaign slots by target.
    public static func desired(inventory: Inventory, configured: [Configured], owners: [Owner]) -> [DesiredCredential] {
        let owned = Set(owners.map(\.slot))
        var desired: [DesiredCredential] = []
        for target in configured where !owned.contains(target.slot) {
            desired.append(
                DesiredCredential(
                    target: .configured(target.name), sha256: target.sha256,
                    holds: holds(inventory, target.slot, target.sha256),
                    why: "tag \(target.slot.tag) does not hold the target"))
        }
        for owner in owners.sorted(by: { $0.target < $1.target }) {
            desired.append(
                DesiredCredential(
                    target: owner.target, sha256: owner.sha256, holds: holds(inventory, owner.slot, owner.sha256),
                    why: "tag \(owner.slot.tag) does not hold the campaign's chain"))
        }
        return desired
    }

    private static func holds(_ inventory: Inventory, _ slot: TagKey, _ sha256: String) -> Bool {
        inventory.credential(tag: slot.tag, type: slot.type)?.sha256 == sha256
    }
}

import CertrotCore
import Synchronization

/// The inventories of recently handled devices, with the bytes they are stored as. A device's row is read and
/// written several times per rotation (admission, issue, PUBACK, ack, inventory), and decoding or encoding its
/// inventory as JSON cost more than the SQL around it (a profile at 30,000 devices: ~11 % of the daemon).
/// A stored inventory is decoded once while its bytes stay the same, and encoded once while it stays equal.
final class StoredInventories: Sendable {
    private let recent = Mutex<[DeviceKey: (bytes: [UInt8], inventory: Inventory)]>([:])
    /// Devices remembered; when full the cache starts over (a campaign's working set is the devices in flight).
    let capacity: Int

    init(capacity: Int = 8192) {
        self.capacity = capacity
    }

    /// The inventory stored as `bytes` for `device`; nil (as before the cache) when the bytes do not parse.
    func decode(device: String, bytes: [UInt8]) -> Inventory? {
        if let hit = recent.withLock({ $0[DeviceKey(device)] }), hit.bytes == bytes { return hit.inventory }
        guard let inventory = try? Inventory.parse(bytes) else { return nil }
        remember(device, bytes, inventory)
        return inventory
    }

    /// The bytes to store for `inventory`.
    func encode(device: String, _ inventory: Inventory) -> [UInt8] {
        if let hit = recent.withLock({ $0[DeviceKey(device)] }), hit.inventory == inventory { return hit.bytes }
        let bytes = inventory.encoded()
        remember(device, bytes, inventory)
        return bytes
    }

    private func remember(_ device: String, _ bytes: [UInt8], _ inventory: Inventory) {
        let key = DeviceKey(device)
        recent.withLock { recent in
            if recent.count >= capacity, recent[key] == nil { recent.removeAll(keepingCapacity: true) }
            recent[key] = (bytes, inventory)
        }
    }
}

import CertrotCore
import FuzzSupport

// Inventory.parse: what a device publishes (retained) on {id}/certs/inventory.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    guard let inventory = try? Inventory.parse(input) else { return 0 }
    // What the store keeps must parse back to the same inventory.
    let encoded = inventory.encoded()
    let again = try? Inventory.parse(encoded)
    require(again == inventory, "inventory does not round-trip through encoded(): \(String(decoding: encoded, as: UTF8.self))")
    return 0
}

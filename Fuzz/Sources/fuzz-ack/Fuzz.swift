import CertrotCore
import FuzzSupport

// Ack.parse: a device's acknowledgement on {id}/certs/ack.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    guard let ack = try? Ack.parse(input) else { return 0 }
    let encoded = ack.encoded()
    // An accepted ack re-encodes to at most a little more (escaping); only check the round trip when it fits.
    if encoded.count <= Ack.maxPayloadBytes {
        let again = try? Ack.parse(encoded)
        require(again == ack, "ack does not round-trip through encoded(): \(String(decoding: encoded, as: UTF8.self))")
    }
    return 0
}

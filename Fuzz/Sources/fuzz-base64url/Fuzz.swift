import CertrotCore
import FuzzSupport

// Base64URL.decode (every JWS part) and encode: decode accepts only canonical text, encode round-trips.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    let text = String(decoding: input, as: UTF8.self)
    if let decoded = Base64URL.decode(text) {
        require(Base64URL.encode(decoded) == text, "decode accepted non-canonical '\(text)'")
    }
    let encoded = Base64URL.encode(input)
    require(Base64URL.decode(encoded) == input, "encode/decode does not round-trip \(input)")
    return 0
}

import CertrotCore
import FuzzSupport

// BundlePart.parse: one slice of a bundle on {id}/certs (the device side parses these).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    guard let part = try? BundlePart.parse(input) else { return 0 }
    require(part.parts >= 1 && part.parts <= BundlePart.maxParts, "parts \(part.parts) accepted")
    require(part.part >= 1 && part.part <= part.parts, "part \(part.part) of \(part.parts) accepted")
    let encoded = Array(try! JSONCoding.encoder.encode(part))
    require((try? BundlePart.parse(encoded)) == part, "bundle part does not round-trip")
    return 0
}

import CertrotCore
import FuzzSupport

// PartAssembler.add fed with a sequence of parts, one JSON part message per line, as a device receives them
// (any order, duplicates, parts of other bundles). Lines that do not parse are dropped, as a device does.
// The first byte chooses the assembler's capacity.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    guard let first = input.first else { return 0 }
    let capacity = Int(first) * 64
    var assembler = PartAssembler(capacity: capacity)
    for line in input.dropFirst().split(separator: 0x0A) {
        guard let part = try? BundlePart.parse(Array(line)) else { continue }
        switch assembler.add(part) {
        case .waiting:
            let missing = assembler.missing
            require(!missing.isEmpty, "waiting with nothing missing")
            require(missing.allSatisfy { (1...part.parts).contains($0) }, "missing \(missing) out of range")
        case .complete(let jws):
            require(jws.utf8.count <= capacity, "complete JWS of \(jws.utf8.count) bytes over capacity \(capacity)")
            require(assembler.jti == nil && assembler.missing.isEmpty, "assembler not reset after completion")
        case .tooLarge(let bytes):
            require(bytes > capacity, "tooLarge(\(bytes)) within capacity \(capacity)")
            assembler.reset()
        }
    }
    return 0
}

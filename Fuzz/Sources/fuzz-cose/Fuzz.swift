import CertrotCore
import FuzzSupport

// Compact bundles (docs/protocol.md §12): the deterministic CBOR decoder, a reassembled COSE_Sign1 on the device
// side (and `certrot bundle inspect`), and a compact part.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    if let item = try? CBOR.decodeDeterministic(input) {
        require(item.encoded == input, "a deterministic item does not re-encode to its bytes")
    }
    let decoded = try? CompactBundle.decode(input)
    if (try? CompactBundle.verify(input, keys: [fuzzVerificationKey])) != nil {
        require(decoded != nil, "verify accepted what decode rejects")
    }
    if let decoded {
        for op in decoded.claims.ops where op.op == .write {
            require(PEM.isNormalized(Array((op.pem ?? "").utf8)), "a compact write rebuilt PEM out of normal form")
        }
    }
    if let part = try? CompactParts.parse(input) {
        require((1...part.parts).contains(part.part) && part.jti.count == 16, "a part out of range was accepted")
    }
    return 0
}

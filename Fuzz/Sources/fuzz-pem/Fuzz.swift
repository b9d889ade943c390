import CertrotCore
import FuzzSupport

// PEM.normalizeChain (operator-supplied chains, RPC) and PEM.isNormalized (device check on a bundle's pem).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    if PEM.isNormalized(input) {
        // Normal form is a fixed point of parse + encode.
        let text = String(decoding: input, as: UTF8.self)
        let blocks = try? PEM.parseBlocks(text)
        require(blocks.map { Array(PEM.encode($0).utf8) } == input, "isNormalized but encode(parse) differs")
    }
    let text = String(decoding: input, as: UTF8.self)
    guard let chain = try? PEM.normalizeChain(text) else { return 0 }
    require(PEM.isNormalized(chain.bytes), "normalizeChain output is not normalized: \(chain.pem)")
    let again = try? PEM.normalizeChain(chain.pem)
    require(again?.pem == chain.pem, "normalizeChain is not idempotent")
    require(chain.certificates.count == again?.certificates.count, "certificate count changed on re-normalizing")
    return 0
}

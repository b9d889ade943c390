import CertrotCore
import FuzzSupport

// JWS.decode / JWS.verify: a reassembled bundle on the device side (and `certrot bundle inspect`).
// Also the typed verify used for signed operator requests.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: bytes(data, size), as: UTF8.self)
    let decoded = try? JWS.decode(text)
    let verified = try? JWS.verify(text, keys: [fuzzVerificationKey])
    if verified != nil {
        require(decoded != nil, "verify accepted what decode rejects")
    }
    _ = try? JWS.verify(text, typ: "certrot-rpc+jwt", keys: [fuzzVerificationKey])
    for piece in text.split(separator: ".", omittingEmptySubsequences: false) {
        if let bytes = Base64URL.decode(piece) {
            require(Base64URL.encode(bytes) == piece, "base64url decode is not canonical")
        }
    }
    return 0
}

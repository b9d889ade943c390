import CertrotCore
import Foundation
import FuzzSupport

// BundleCheck.check, the device's whole acceptance check, on bundles that carry a valid signature: the input is
// the claims JSON; when it decodes, the harness signs it with the fuzzing key so that the ops checks (PEM rules,
// sha256, trust_key JWK and thumbprint, tag/type ranges) are reached.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let claims = try? JSONDecoder().decode(BundleClaims.self, from: Data(bytes(data, size))) else { return 0 }
    let jws = try! JWS.sign(claims, with: fuzzSigningKey)  // a key in memory cannot fail to sign
    let check = BundleCheck(
        device: "nrf-352656100000001", keys: [fuzzVerificationKey], profile: .nrf91, appliedSeq: 0,
        now: 1_760_000_000)
    guard let checked = try? check.check(jws) else { return 0 }
    require(checked == claims, "checked claims differ from the signed ones")
    return 0
}

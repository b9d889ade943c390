import CertrotCore
import CertrotServer
import CertrotTestSupport
import Testing

/// The engine checks a write op once per distinct op (#35 §3): an op that differs in anything the check covers is
/// checked again, and refused as before.
@Suite struct CheckedOpsTests {
    @Test func aWriteOpIsCheckedOnce_andOneThatDiffersIsCheckedAgain() throws {
        let chain = try PEM.normalizeChain(try CertificateFactory.rootCA(commonName: "Checked CA", days: 100).pem)
        let text = String(decoding: chain.bytes, as: UTF8.self)
        var checked = CheckedOps()
        let op = BundleOp.write(tag: 42, type: 0, pem: text)
        try checked.check(op, profile: .nrf91)
        try checked.check(op, profile: .nrf91)
        // The same digest claimed for another PEM (CRLF line ends): checked, and refused.
        var forged = op
        forged.pem = text.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(throws: CertrotError.self) { try checked.check(forged, profile: .nrf91) }
        // A digest that does not match its PEM, on the tag and type of the op that passed.
        var wrongDigest = op
        wrongDigest.sha256 = String(repeating: "0", count: 64)
        #expect(throws: CertrotError.self) { try checked.check(wrongDigest, profile: .nrf91) }
        // Too large for the profile, though it passed under a larger one.
        let small = DeviceProfile(name: "small", maxMessage: 2048, maxCredential: 256)
        var fresh = CheckedOps()
        try fresh.check(op, profile: .nrf91)
        #expect(throws: CertrotError.self) { try fresh.check(op, profile: small) }
    }
}

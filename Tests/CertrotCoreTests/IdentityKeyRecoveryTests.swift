@testable import CertrotCore
import Crypto
import Foundation
import Testing

/// A modem's identity public key from its attestations (ECDSA public-key recovery), and the UUID forms an operator
/// pastes in.
@Suite struct IdentityKeyRecoveryTests {
    let base = KeygenOutputTests()

    func attestation(
        tag: Int64, signer: P256.Signing.PrivateKey, selfDescribed: Bool = true
    ) throws -> COSESign1 {
        let text = try base.keygen(csr: try base.csrDER(), tag: tag, signer: signer, selfDescribed: selfDescribed)
        return try #require(KeygenOutput.parse(text).cose)
    }

    @Test func oneAnswer_leavesTwoCandidates_oneOfThemTheIdentityKey() throws {
        let identity = P256.Signing.PrivateKey()
        let candidates = IdentityKeyRecovery.candidates(try attestation(tag: 16_842_753, signer: identity))
        #expect(candidates.count == 2)
        #expect(candidates.contains { $0.x963Representation == identity.publicKey.x963Representation })
        #expect(Set(candidates.map(\.x963Representation)).count == 2)
    }

    @Test func twoAnswersFromOneModem_settleTheKey() throws {
        let identity = P256.Signing.PrivateKey()
        let answers = [
            try attestation(tag: 16_842_753, signer: identity), try attestation(tag: 16_842_754, signer: identity),
        ]
        guard case .settled(let key) = IdentityKeyRecovery.recover(answers) else {
            Issue.record("two answers of one modem did not settle its key")
            return
        }
        #expect(key.x963Representation == identity.publicKey.x963Representation)
        guard case .ambiguous(let two) = IdentityKeyRecovery.recover([answers[0]]) else {
            Issue.record("one answer is not ambiguous")
            return
        }
        #expect(two.count == 2)
    }

    @Test func answersFromTwoModems_fitNoKey() throws {
        let answers = [
            try attestation(tag: 7, signer: P256.Signing.PrivateKey()),
            try attestation(tag: 7, signer: P256.Signing.PrivateKey()),
        ]
        guard case .none = IdentityKeyRecovery.recover(answers) else {
            Issue.record("answers of two modems settled on a key")
            return
        }
    }

    @Test func aMalformedSignature_yieldsNothing() throws {
        var message = try attestation(tag: 7, signer: P256.Signing.PrivateKey())
        message.signature = [UInt8](repeating: 0, count: 64)
        #expect(IdentityKeyRecovery.candidates(message).isEmpty)
        message.signature = [UInt8](repeating: 0xFF, count: 64)
        #expect(IdentityKeyRecovery.candidates(message).isEmpty)
        message.signature = [1, 2, 3]
        #expect(IdentityKeyRecovery.candidates(message).isEmpty)
    }

    @Test func uuids_inTheFormModemsPrint_andAs32HexDigits() {
        let bytes: [UInt8] = [
            0x50, 0x36, 0x31, 0x54, 0x39, 0x31, 0x44, 0xF0, 0x80, 0x22, 0x12, 0x1B, 0x64, 0x01, 0x62, 0x7D,
        ]
        #expect(ModemUUID.parse("50363154-3931-44f0-8022-121b6401627d") == bytes)
        #expect(ModemUUID.parse("50363154393144F08022121B6401627D") == bytes)
        #expect(ModemUUID.format(bytes) == "50363154-3931-44f0-8022-121b6401627d")
        for bad in [
            "", "50363154-3931-44f0-8022-121b6401627", "5036-3154-3931-44f0-8022121b6401627d",
            "{50363154-3931-44f0-8022-121b6401627d}", "50363154-3931-44f0-8022-121b6401627dzz",
            "50363154--393144f0-8022-121b6401627d",
        ] {
            #expect(ModemUUID.parse(bad) == nil, "\(bad)")
        }
    }
}

@testable import CertrotCore
import CertrotTestSupport
import Crypto
import Foundation
import Testing

/// `attestation: learn` on real modems' answers: the first answer records two candidates, the second from the same
/// modem pins the key, and what does not fit is refused.
@Suite struct LearnedIdentityTests {
    let fixtures: RealModemFixtures
    let identity: RealModemFixtures.IdentityKey
    let first: KeygenOutput
    let second: KeygenOutput

    init() throws {
        fixtures = try RealModemFixtures.load()
        identity = try #require(fixtures.identityKeys.first)
        let answers = identity.recoveredFrom.compactMap(fixtures.answer)
        try #require(answers.count >= 2)
        first = try KeygenOutput.parse(answers[0].modemAnswer)
        second = try KeygenOutput.parse(answers[1].modemAnswer)
    }

    func tag(_ output: KeygenOutput) -> Int64 { output.attestation?.secTag ?? -1 }

    /// What the first real answer records.
    func firstSeen() throws -> LearnedIdentity {
        let outcome = try LearnedIdentity.check(first, device: "d1", secTag: tag(first), learned: nil, now: 100)
        guard case .firstSeen(let learned) = outcome else { throw CertrotError(.badAttestation, "\(outcome)") }
        return learned
    }

    @Test func theFirstAnswer_recordsTwoCandidates_andTheSecondPinsTheRealModemsKey() throws {
        let learned = try firstSeen()
        #expect(learned.candidates.count == 2 && learned.candidates.contains(identity.identityPublicKey))
        #expect(learned.key == nil && learned.uuid == ModemUUID.parse(identity.uuid) && learned.firstSeenAt == 100)
        guard
            case .pinned(let pinned) = try LearnedIdentity.check(
                second, device: "d1", secTag: tag(second), learned: learned, now: 200)
        else {
            Issue.record("the second answer did not pin the key")
            return
        }
        #expect(pinned.key == identity.identityPublicKey && pinned.pinnedAt == 200 && pinned.firstSeenAt == 100)
        // Pinned: both answers verify, nothing more to record.
        for output in [first, second] {
            #expect(
                try LearnedIdentity.check(output, device: "d1", secTag: tag(output), learned: pinned, now: 300)
                    == .verified)
        }
    }

    @Test func whatDoesNotFit_isRefused() throws {
        let learned = try firstSeen()
        // Another modem's answer (another UUID).
        let other = try KeygenOutput.parse(try #require(fixtures.answer("A")).keygen)
        #expect(throws: CertrotError.self) {
            _ = try LearnedIdentity.check(other, device: "d1", secTag: tag(other), learned: learned, now: 200)
        }
        // Another sec tag than the keygen asked for.
        #expect(throws: CertrotError.self) {
            _ = try LearnedIdentity.check(second, device: "d1", secTag: tag(second) + 1, learned: learned, now: 200)
        }
        // The same UUID, signed by a key that is neither candidate.
        let base = KeygenOutputTests()
        var impostor = learned
        impostor.uuid = base.uuid
        let stranger = try KeygenOutput.parse(
            try base.keygen(csr: try base.csrDER(), tag: 7, signer: P256.Signing.PrivateKey()))
        #expect(throws: CertrotError.self) {
            _ = try LearnedIdentity.check(stranger, device: "d1", secTag: 7, learned: impostor, now: 200)
        }
        // An answer without attestation.
        let bare = try KeygenOutput.parse(Base64URL.encode(first.csrDER))
        #expect(throws: CertrotError.self) {
            _ = try LearnedIdentity.check(bare, device: "d1", secTag: tag(first), learned: nil, now: 100)
        }
    }
}

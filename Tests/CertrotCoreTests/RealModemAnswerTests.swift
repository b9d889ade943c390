@testable import CertrotCore
import Crypto
import CertrotTestSupport
import Foundation
import Testing

/// AT%KEYGEN answers printed by real nRF9160/nRF9151 modems, published by Nordic (nRFCloud/utils,
/// cloud-device-helpers-js) and in one third-party tutorial: `Vectors/real-modem/keygen.json`, each with the
/// repository, path and commit it came from. Nothing here was made by certrot.
@Suite struct RealModemAnswerTests {
    static func fixtures() throws -> RealModemFixtures { try RealModemFixtures.load() }

    static func modemAnswer(_ answer: RealModemFixtures.Answer) -> String { answer.modemAnswer }

    @Test func everyRealAnswer_isRead_withTheUUIDAndSecTagItsSourceNames() throws {
        let fixtures = try Self.fixtures()
        let attested = fixtures.answers.filter { $0.kind.hasPrefix("csr+cose") }
        #expect(attested.count >= 7, "the seven CSR answers of the issue, and more")
        for answer in fixtures.answers {
            let output: KeygenOutput
            do {
                output = try KeygenOutput.parse(Self.modemAnswer(answer))
            } catch {
                Issue.record("answer \(answer.id) (\(answer.repository) \(answer.path)) refused: \(error)")
                continue
            }
            guard answer.kind.hasPrefix("csr+cose") else {
                #expect(output.attestation == nil, "answer \(answer.id) is a CSR alone")
                continue
            }
            let attestation = try #require(output.attestation, "answer \(answer.id)")
            #expect(attestation.uuid == answer.uuid.flatMap(ModemUUID.parse), "answer \(answer.id)")
            #expect(attestation.secTag == answer.secTag, "answer \(answer.id)")
            #expect(attestation.nonce.count == 16)
            #expect(output.cose?.unprotected == .map([(.unsigned(4), .bytes([0x21]))]), "kid -2: the identity key")
            #expect(IdentityKeyRecovery.candidates(try #require(output.cose)).count == 2, "answer \(answer.id)")
        }
    }

    /// A stored answer whose CSR a test author re-encoded (without the NULL parameters) no longer matches the digest
    /// the modem attested: refused, as Nordic's parser says too ("COSE digest does NOT match payload").
    @Test func anAnswerWhoseCSRWasEdited_isRefused() throws {
        let edited = try Self.fixtures().answers.filter { $0.verbatim == false }
        #expect(!edited.isEmpty)
        for answer in edited {
            #expect(throws: CertrotError.self, "answer \(answer.id)") { _ = try KeygenOutput.parse(answer.keygen) }
        }
    }

    /// Two answers of one modem pin its identity key (the fixture names the key, recovered independently in
    /// Python); the real attestation then verifies for its own sec tag, and fails for another tag, another key, or
    /// an altered CSR.
    @Test func twoAnswersOfOneRealModem_pinItsIdentityKey_underWhichItsAnswersVerify() throws {
        let fixtures = try Self.fixtures()
        #expect(!fixtures.identityKeys.isEmpty)
        for identity in fixtures.identityKeys {
            let answers = fixtures.answers.filter { identity.recoveredFrom.contains($0.id) }
            #expect(answers.count >= 2)
            let outputs = try answers.map { try KeygenOutput.parse(Self.modemAnswer($0)) }
            guard case .settled(let key) = IdentityKeyRecovery.recover(outputs.compactMap(\.cose)) else {
                Issue.record("the answers of modem \(identity.uuid) did not settle one key")
                continue
            }
            #expect(Hex.encode(key.x963Representation) == identity.identityPublicKey)
            let uuid = try #require(ModemUUID.parse(identity.uuid))
            for (answer, output) in zip(answers, outputs) {
                let tag = try #require(answer.secTag)
                try output.verify(identityKey: key, secTag: tag, uuid: uuid)
                #expect(throws: CertrotError.self) { try output.verify(identityKey: key, secTag: tag + 1, uuid: uuid) }
                #expect(throws: CertrotError.self) {
                    try output.verify(identityKey: P256.Signing.PrivateKey().publicKey, secTag: tag, uuid: uuid)
                }
                #expect(throws: CertrotError.self) {
                    try output.verify(identityKey: key, secTag: tag, uuid: [UInt8](repeating: 0, count: 16))
                }
                // The CSR altered (one byte of its key), the attestation kept: refused.
                let pieces = Self.modemAnswer(answer).split(separator: ".")
                var der = try #require(Base64URL.decode(pieces[0]))
                der[der.count / 2] ^= 0x01
                #expect(throws: CertrotError.self) {
                    _ = try KeygenOutput.parse(Base64URL.encode(der) + "." + pieces[1])
                }
            }
        }
    }

    /// `AT%KEYGEN=…,2,1` prints a public key, not a CSR: not something certrot issues for, and said so.
    @Test func aPublicKeyAnswer_isRefusedAsNoCSR() throws {
        for answer in try Self.fixtures().publicKeyAnswers {
            #expect(throws: CertrotError.self, "answer \(answer.id)") { _ = try KeygenOutput.parse(answer.keygen) }
        }
    }

    /// The modem's response line as transcripts show it (`%KEYGEN: "…"` then `OK`).
    @Test func aRealAnswer_asTheModemsResponseLine_isRead() throws {
        let answer = try #require(try Self.fixtures().answers.first { $0.kind == "csr+cose" })
        let output = try KeygenOutput.parse("%KEYGEN: \"\(answer.keygen)\"\r\nOK\r\n")
        #expect(output.attestation?.secTag == answer.secTag)
    }
}

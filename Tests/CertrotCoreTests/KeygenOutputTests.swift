@testable import CertrotCore
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

/// A modem's KEYGEN output, made the way an nRF91 makes it (a key it generated, a CSR, a COSE_Sign1 by its
/// identity key), and every check certrot runs on it.
@Suite struct KeygenOutputTests {
    let deviceKey = P256.Signing.PrivateKey()
    let identityKey = P256.Signing.PrivateKey()
    let uuid = (0..<16).map { UInt8($0 * 7 & 0xFF) }

    func csrDER(key: Certificate.PrivateKey? = nil) throws -> [UInt8] {
        let csr = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName("50503041-3633-4261-803d-1e2b8c2f5a61") },
            privateKey: key ?? Certificate.PrivateKey(deviceKey), attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256)
        var serializer = DER.Serializer()
        try serializer.serialize(csr)
        return serializer.serializedBytes
    }

    /// `[9, uuid, bstr(tag), sha256(csr), nonce]`, signed by `signer`; the unprotected header names the key type.
    /// `selfDescribed`: inside CBOR tag 55799, as real modems write it; `outerTag`: inside another tag instead.
    func keygen(
        csr: [UInt8], tag: Int64, signer: P256.Signing.PrivateKey? = nil, digestOf: [UInt8]? = nil,
        tagItem: CBOR? = nil, selfDescribed: Bool = true, outerTag: UInt64? = nil
    ) throws -> String {
        var item = CBOR.array([
            .int(9), .bytes(uuid), .bytes((tagItem ?? .int(tag)).encoded),
            .bytes(Array(SHA256.hash(data: digestOf ?? csr))), .bytes(Array(repeating: 0xA5, count: 16)),
        ])
        if let outerTag { item = .tagged(outerTag, item) } else if selfDescribed { item = .tagged(55799, item) }
        let payload = item.encoded
        let cose = try COSESign1.sign(
            payload: payload, with: signer ?? identityKey,
            unprotected: .map([(.unsigned(4), .bytes(CBOR.int(-2).encoded))]))
        return Base64URL.encode(csr) + "." + Base64URL.encode(cose.encoded)
    }

    @Test func anAttestedOutput_parses_andVerifiesUnderTheIdentityKey() throws {
        let csr = try csrDER()
        let output = try KeygenOutput.parse(try keygen(csr: csr, tag: 16_842_754))
        #expect(output.csrDER == csr)
        #expect(output.publicKey.rawRepresentation == deviceKey.publicKey.rawRepresentation)
        let attestation = try #require(output.attestation)
        #expect(attestation.uuid == uuid && attestation.secTag == 16_842_754 && attestation.nonce.count == 16)
        try output.verify(identityKey: identityKey.publicKey, secTag: 16_842_754, uuid: uuid)
        try output.verify(identityKey: identityKey.publicKey, secTag: 16_842_754, uuid: nil)
    }

    /// Real modems put the payload inside the self-described tag 55799; certrot takes it there (and its absence),
    /// and nowhere else: not around an inner item, not twice, not another tag.
    @Test func theSelfDescribedTag_isTakenAroundThePayloadOnly() throws {
        let csr = try csrDER()
        for selfDescribed in [true, false] {
            let output = try KeygenOutput.parse(try keygen(csr: csr, tag: 7, selfDescribed: selfDescribed))
            try output.verify(identityKey: identityKey.publicKey, secTag: 7, uuid: uuid)
        }
        for outer: UInt64 in [24, 18, 55800] {
            #expect(throws: CertrotError.self, "tag \(outer)") {
                _ = try KeygenOutput.parse(try keygen(csr: csr, tag: 7, outerTag: outer))
            }
        }
        let twice = CBOR.tagged(55799, .tagged(55799, .array([.int(9)])))
        #expect(throws: CertrotError.self) { _ = try KeygenOutput.parseAttestation(twice.encoded) }
        #expect(throws: CertrotError.self) {
            _ = try KeygenOutput.parse(try keygen(csr: csr, tag: 7, tagItem: .tagged(55799, .int(7))))
        }
    }

    /// The modem's whole response line is taken as well as the bare answer.
    @Test func theModemsResponseFraming_isTakenOff() throws {
        let text = try keygen(csr: try csrDER(), tag: 7)
        for framed in ["%KEYGEN: \"\(text)\"", "%KEYGEN: \"\(text)\"\r\nOK\r\n", "\r\n\(text)\r\n"] {
            #expect(try KeygenOutput.parse(framed).attestation?.secTag == 7)
        }
        for bad in ["%KEYGEN: \(text)", "%KEYGEN: \"\(text)", "\"\(text)\"", "%KEYGEN:\"\(text)\""] {
            #expect(throws: CertrotError.self) { _ = try KeygenOutput.parse(bad) }
        }
    }

    @Test func aTagAbove2to31_arrivesNegative_andReadsAsTheTag() throws {
        let tag: Int64 = 0xFFFF_FFF0
        let output = try KeygenOutput.parse(
            try keygen(csr: try csrDER(), tag: tag, tagItem: .int(Int64(Int32(bitPattern: UInt32(tag))))))
        #expect(output.attestation?.secTag == tag)
    }

    @Test func olderFirmwaresNullParameters_areNormalised_andTheDigestIsOfWhatTheModemSent() throws {
        let normal = try csrDER()
        let legacy = try #require(Self.withNullParameters(normal))
        #expect(legacy.count == normal.count + 2)
        #expect(throws: (any Error).self) { _ = try CertificateSigningRequest(derEncoded: legacy) }
        let output = try KeygenOutput.parse(try keygen(csr: legacy, tag: 7))
        #expect(output.csrDER == legacy)
        try output.verify(identityKey: identityKey.publicKey, secTag: 7, uuid: uuid)
    }

    @Test func everyForgery_isRefused_sayingWhy() throws {
        let csr = try csrDER()
        func refusal(
            _ text: String, identity: P256.Signing.PublicKey? = nil, tag: Int64 = 7, uuid: [UInt8]? = nil
        )
            -> String?
        {
            do {
                let output = try KeygenOutput.parse(text)
                try output.verify(identityKey: identity ?? identityKey.publicKey, secTag: tag, uuid: uuid)
                return nil
            } catch {
                return "\(error.code.rawValue): \(error.message)"
            }
        }
        // Proof of possession: a CSR whose signature is broken.
        var broken = csr
        broken[broken.count - 5] ^= 0x01
        #expect(refusal(try keygen(csr: broken, tag: 7))?.hasPrefix("invalid_csr") == true)
        // Not P-256.
        let p384 = try csrDER(key: Certificate.PrivateKey(P384.Signing.PrivateKey()))
        #expect(refusal(try keygen(csr: p384, tag: 7)) == "invalid_csr: the CSR's key is not P-256")
        // Signed by another modem's identity key.
        #expect(
            refusal(try keygen(csr: csr, tag: 7, signer: P256.Signing.PrivateKey()))?.contains("identity key") == true)
        // For another sec tag, another CSR, another modem.
        #expect(refusal(try keygen(csr: csr, tag: 8))?.contains("sec tag 8, not 7") == true)
        #expect(refusal(try keygen(csr: csr, tag: 7, digestOf: try csrDER()))?.contains("another CSR") == true)
        #expect(
            refusal(try keygen(csr: csr, tag: 7), uuid: Array(repeating: 0, count: 16))?.contains("another modem")
                == true)
        // No attestation where a registered identity key requires one.
        #expect(refusal(Base64URL.encode(csr))?.contains("carries no attestation") == true)
        // Garbage.
        for text in [
            "", ".", "!!!", Base64URL.encode([0x30, 0x03, 0x02, 0x01, 0x00]), Base64URL.encode(csr) + ".AAAA",
            Base64URL.encode(csr) + "." + Base64URL.encode(CBOR.tagged(18, .array([])).encoded), "a.b.c",
        ] {
            #expect(refusal(text) != nil, "\(text)")
        }
    }

    @Test func withoutARegisteredIdentityKey_anUnattestedOutputIsTaken_butItsTagStillCounts() throws {
        let csr = try csrDER()
        try KeygenOutput.parse(Base64URL.encode(csr)).verify(identityKey: nil, secTag: 7, uuid: nil)
        #expect(throws: CertrotError.self) {
            try KeygenOutput.parse(try keygen(csr: csr, tag: 9)).verify(identityKey: nil, secTag: 7, uuid: nil)
        }
    }

    /// Outputs made by pyca/cryptography and cbor2 (`Vectors/make_keygen_vectors.py`), one of them in the older
    /// NULL-parameter form and one for a sec tag above 2^31.
    @Test func outputsMadeByAnotherImplementation_verify() throws {
        struct Vectors: Decodable {
            struct Output: Decodable {
                var keygen: String
                var secTag: Int64
                var legacy: Bool
                var devicePublicKey: String
            }
            var identityPublicKey: String
            var uuid: String
            var outputs: [Output]
        }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Vectors/keygen.json")
        let vectors = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
        let identity = try P256.Signing.PublicKey(
            x963Representation: try #require(Hex.decode(vectors.identityPublicKey)))
        #expect(vectors.outputs.count == 3 && vectors.outputs.contains { $0.legacy })
        for output in vectors.outputs {
            let parsed = try KeygenOutput.parse(output.keygen)
            try parsed.verify(identityKey: identity, secTag: output.secTag, uuid: Hex.decode(vectors.uuid))
            #expect(Array(parsed.publicKey.x963Representation) == Hex.decode(output.devicePublicKey))
            #expect(throws: CertrotError.self) {
                try parsed.verify(identityKey: identity, secTag: output.secTag + 1, uuid: nil)
            }
        }
    }

    /// `der` (a CSR) with ecdsa-with-SHA256 written with NULL parameters, as older modem firmware wrote it.
    static func withNullParameters(_ der: [UInt8]) -> [UInt8]? {
        KeygenOutput.replacingSignatureAlgorithm(
            der, from: KeygenOutput.ecdsaSHA256, to: KeygenOutput.ecdsaSHA256WithNull)
    }
}

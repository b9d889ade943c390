import CertrotCore
import Crypto
import Foundation
import Testing

/// Compact bundles (docs/protocol.md §12): COSE_Sign1 over deterministic CBOR, certificates as DER.
@Suite struct CompactBundleTests {
    static let key = SigningKey.generate()
    static let roots = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("bench/roots")

    static func root(_ name: String) throws -> CertificateChain {
        try PEM.normalizeChain(
            try String(contentsOf: roots.appendingPathComponent("\(name).pem"), encoding: .utf8))
    }

    static func claims(_ ops: [BundleOp]) -> BundleClaims {
        BundleClaims(
            sub: "nrf-352656100123456", jti: "9f2c4e61b0a84d7fa3c5e2d1b6f80a47", iat: 1_764_547_200,
            exp: 1_765_152_000, seq: 3, ops: ops)
    }

    @Test func everyKindOfOp_survivesTheRoundTrip_andVerifies() throws {
        let chain = try Self.root("ISRG_Root_X1").pem + (try Self.root("Amazon_Root_CA_3").pem)
        let next = SigningKey.generate()
        let claims = Self.claims([
            .write(tag: 42, type: 0, pem: chain), .delete(tag: 43, type: 1), .trustKey(next.publicKey),
            .keygen(tag: 16_842_754, subject: "CN=nrf-352656100123456"), .activate(tag: 16_842_754),
        ])
        let cose = try CompactBundle.sign(claims, with: Self.key)
        #expect(cose.first == 0xD2, "CBOR tag 18")
        let decoded = try CompactBundle.verify(cose, keys: [Self.key.publicKey])
        #expect(decoded.kid == Self.key.kid)
        #expect(decoded.claims == claims, "the same claims as the JWS would carry")
        // Another key, or none that matches: refused.
        #expect(throws: CertrotError.self) { try CompactBundle.verify(cose, keys: [next.publicKey]) }
        // The payload's encoding is deterministic: the same claims, the same bytes.
        #expect(try CompactBundle.payload(claims).encoded == CompactBundle.payload(claims).encoded)
        #expect(try CBOR.decodeDeterministic(decoded.message.payload).encoded == decoded.message.payload)
        // The bytes written around the payload are exactly the COSE_Sign1 encoder's, and so is what was signed.
        #expect(decoded.message.encoded == cose)
        #expect(try CBOR.decodeDeterministic(cose).encoded == cose)
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: decoded.message.signature)
        #expect(Self.key.publicKey.publicKey.isValidSignature(signature, for: decoded.message.toBeSigned()))
    }

    @Test func aTamperedByte_atEveryPosition_isRefused() throws {
        let cose = try CompactBundle.sign(
            Self.claims([.write(tag: 42, type: 0, pem: try Self.root("Amazon_Root_CA_3").pem)]), with: Self.key)
        var accepted: [Int] = []
        for index in cose.indices {
            var tampered = cose
            tampered[index] ^= 0x01
            if (try? CompactBundle.verify(tampered, keys: [Self.key.publicKey])) != nil { accepted.append(index) }
        }
        #expect(accepted.isEmpty, "accepted with byte(s) \(accepted) changed")
    }

    @Test func cborThatIsNotDeterministic_orNotABundle_isRefusedWithAReason() throws {
        func reason(_ bytes: [UInt8]) -> String {
            do {
                _ = try CBOR.decodeDeterministic(bytes)
                return "accepted"
            } catch { return error.message }
        }
        #expect(reason([0x18, 0x03]).contains("deterministic"), "a longer head than needed")
        #expect(reason([0xA2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02]).contains("deterministic"), "keys out of order")
        #expect(reason([0xA2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x01]).contains("twice"), "a duplicate key")
        #expect(reason([0x9F, 0x01, 0xFF]).contains("indefinite"))
        #expect(reason([0x01, 0x00]).contains("after the CBOR item"), "trailing bytes")

        let valid = try CompactBundle.sign(
            Self.claims([.write(tag: 42, type: 0, pem: try Self.root("Amazon_Root_CA_3").pem)]), with: Self.key)
        let message = try COSESign1.parse(valid)
        func signed(payload: [UInt8], tag: UInt64 = 18) throws -> [UInt8] {
            var unsigned = COSESign1(protected: message.protected, payload: payload, signature: [])
            unsigned.signature = Array(try Self.key.signature(for: unsigned.toBeSigned()).rawRepresentation)
            guard tag != 18, case .tagged(_, let inner) = try CBOR.decode(unsigned.encoded) else {
                return unsigned.encoded
            }
            return CBOR.tagged(tag, inner).encoded
        }
        func refusal(_ bytes: [UInt8]) -> String {
            do {
                _ = try CompactBundle.verify(bytes, keys: [Self.key.publicKey])
                return "accepted"
            } catch { return error.message }
        }
        #expect(refusal(try signed(payload: message.payload, tag: 17)).contains("tag 18"), "the wrong tag")
        // A validly signed payload whose seq has a two-byte head: still refused.
        var payload = try CBOR.decode(message.payload)
        guard case .map(var pairs) = payload else { throw CertrotError(.invalidCBOR, "no map") }
        pairs.removeAll { $0.key == .text("seq") }
        payload = .map(pairs)
        var loose = payload.encoded
        loose[0] += 1  // one more pair: "seq" with the value 3 in a 1-byte-argument head
        loose += CBOR.text("seq").encoded + [0x18, 0x03]
        let looseRefusal = refusal(try signed(payload: loose))
        #expect(looseRefusal.contains("deterministic"), "\(looseRefusal)")
        // A DER that does not parse, with the digest of its PEM: refused before anything could be written.
        let bogus = [UInt8](repeating: 0x30, count: 40)
        let pem = PEM.encode([PEMBlock(label: "CERTIFICATE", der: bogus)])
        let op = CBOR.map([
            (.text("op"), .text("write")), (.text("tag"), .int(42)), (.text("type"), .int(0)),
            (.text("der"), .array([.bytes(bogus)])),
            (.text("sha256"), .bytes(Array(SHA256.hash(data: Array(pem.utf8))))),
        ])
        guard case .map(var fields) = try CBOR.decode(message.payload) else { return }
        fields = fields.map { $0.key == .text("ops") ? (key: $0.key, value: .array([op])) : $0 }
        #expect(refusal(try signed(payload: CBOR.map(fields).encoded)).contains("not DER X.509"))
    }

    @Test func parts_fitEveryPacket_startWith0x84_andReassemble() throws {
        let chain = try Self.root("ISRG_Root_X1").pem + (try Self.root("Amazon_Root_CA_1").pem)
        let claims = Self.claims([.write(tag: 42, type: 0, pem: chain)])
        let cose = try CompactBundle.sign(claims, with: Self.key)
        let jti = try #require(Hex.decode(claims.jti))
        for maxMessage in [256, 300, 512, 1000, 2048, 4096] {
            for topic in ["a/certs", "nrf-352656100123456/certs", String(repeating: "x", count: 64) + "/certs"] {
                let parts = try CompactParts.split(cose: cose, jti: jti, topic: topic, maxMessage: maxMessage)
                var data: [UInt8] = []
                for (index, payload) in parts.enumerated() {
                    #expect(payload.first == 0x84)
                    #expect(
                        Parts.publishPacketSize(topicBytes: topic.utf8.count, payloadBytes: payload.count)
                            <= maxMessage)
                    let part = try CompactParts.parse(payload)
                    #expect(part.jti == jti && part.part == index + 1 && part.parts == parts.count)
                    data += part.data
                }
                #expect(data == cose, "maxMessage \(maxMessage), topic \(topic)")
            }
        }
        #expect(throws: CertrotError.self) {
            try CompactParts.parse(CBOR.array([.bytes(jti), .int(3), .int(2), .bytes([1])]).encoded)
        }
        #expect(throws: CertrotError.self) { try CompactParts.parse(Array(#"{"jti":"x"}"#.utf8)) }
    }

    /// The sizes of docs/protocol.md §12, on the nrf91 profile with a 19-character device ID: a one-write bundle of
    /// one real root costs its DER plus at most 330 bytes on air (the fixed shapes leave 323–324 here: issue #17's
    /// target of DER + 320 is missed by those 3–4 bytes), and at most 0.55 × the JWS bundle's bytes.
    @Test func aOneWriteBundle_costsItsDERPlusAbout320BytesOnAir_andHalfTheJWS() throws {
        let device = "nrf-352656100123456"
        let topic = Topics.bundle(device)
        for name in ["Amazon_Root_CA_1", "Amazon_Root_CA_3", "DigiCert_Global_Root_G2", "ISRG_Root_X1"] {
            let chain = try Self.root(name)
            let der = try PEM.parseBlocks(chain.pem).reduce(0) { $0 + $1.der.count }
            let claims = Self.claims([.write(tag: 42, type: 0, pem: chain.pem)])
            let cose = try CompactBundle.sign(claims, with: Self.key)
            let compact = CompactParts.bytesOnAir(
                try CompactParts.split(
                    cose: cose, jti: try #require(Hex.decode(claims.jti)), topic: topic, maxMessage: 2048),
                topic: topic)
            let jws = CompactParts.bytesOnAir(
                try Parts.split(
                    jws: try JWS.sign(claims, with: Self.key), jti: claims.jti, topic: topic, maxMessage: 2048),
                topic: topic)
            #expect(compact <= der + 330, "\(name): \(compact) bytes on air for \(der) bytes of DER")
            #expect(Double(compact) <= 0.55 * Double(jws), "\(name): \(compact) against \(jws) as JWS")
        }
    }
}

import CertrotCore
import CertrotTestSupport
import Crypto
import Foundation
import Testing

@Suite struct JWSTests {
    static let key = SigningKey.generate()
    static let ca = try! CertificateFactory.rootCA(commonName: "Bundle Test CA")

    static func claims(
        sub: String = "dev-1", seq: Int64 = 1, iat: Int64 = 1_800_000_000, exp: Int64 = 1_800_604_800
    ) -> BundleClaims {
        BundleClaims(
            sub: sub, jti: "00112233445566778899aabbccddeeff", iat: iat, exp: exp, seq: seq,
            ops: [.write(tag: 42, type: 0, pem: ca.pem), .delete(tag: 43, type: 0)])
    }

    @Test func signedBundle_verifies_andRoundTripsClaims() throws {
        let jws = try JWS.sign(Self.claims(), with: Self.key)
        let decoded = try JWS.verify(jws, keys: [Self.key.publicKey])
        #expect(decoded.claims == Self.claims())
        #expect(decoded.header == JWSHeader(alg: "ES256", kid: Self.key.kid, typ: "certrot-bundle+jwt"))
    }

    @Test func iatAndExp_areWholeSeconds() throws {
        let jws = try JWS.sign(Self.claims(), with: Self.key)
        let payload = Base64URL.decode(jws.split(separator: ".")[1])!
        let text = String(decoding: payload, as: UTF8.self)
        #expect(text.contains(#""iat":1800000000,"#))
        #expect(text.contains(#""exp":1800604800,"#))
        #expect(!text.contains(#"\/"#))
    }

    @Test func kid_isTheRFC7638Thumbprint() {
        let key = Self.key.publicKey
        let x = Base64URL.encode(key.x)
        let y = Base64URL.encode(key.y)
        let canonical = #"{"crv":"P-256","kty":"EC","x":"\#(x)","y":"\#(y)"}"#
        #expect(key.kid == Base64URL.encode(Array(SHA256.hash(data: Array(canonical.utf8)))))
        #expect(key.kid.count == 43)
    }

    @Test func tamperedByteAnywhere_failsVerification() throws {
        let jws = Array(try JWS.sign(Self.claims(), with: Self.key).utf8)
        var failures = 0
        for index in stride(from: 0, to: jws.count, by: 7) where jws[index] != UInt8(ascii: ".") {
            var tampered = jws
            tampered[index] = tampered[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            if (try? JWS.verify(String(decoding: tampered, as: UTF8.self), keys: [Self.key.publicKey])) == nil {
                failures += 1
            }
        }
        #expect(failures == stride(from: 0, to: jws.count, by: 7).filter { jws[$0] != UInt8(ascii: ".") }.count)
    }

    @Test func unknownKid_isRefused() {
        let jws = try! JWS.sign(Self.claims(), with: Self.key)
        do {
            _ = try JWS.verify(jws, keys: [SigningKey.generate().publicKey])
            Issue.record("verified with the wrong key")
        } catch {
            #expect(error.code == .unknownKey)
        }
    }

    @Test func signingKey_roundTripsThroughPKCS8_andNeverPrintsItself() throws {
        let loaded = try SigningKey(pem: Self.key.pkcs8PEM!)
        #expect(loaded.kid == Self.key.kid)
        #expect(Self.key.pkcs8PEM!.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(!"\(Self.key)".contains("PRIVATE"))
    }
}

@Suite struct BundleCheckTests {
    let key = JWSTests.key
    func check(
        _ claims: BundleClaims, device: String = "dev-1", applied: Int64 = 0, now: Int64? = 1_800_000_100
    ) -> CertrotError.Code? {
        let checker = BundleCheck(device: device, keys: [key.publicKey], profile: .nrf91, appliedSeq: applied, now: now)
        do {
            _ = try checker.check(try JWS.sign(claims, with: key))
            return nil
        } catch {
            return error.code
        }
    }

    @Test func goodBundle_passes() {
        #expect(check(JWSTests.claims()) == nil)
        #expect(check(JWSTests.claims(), now: nil) == nil)
    }

    @Test func bundleForAnotherDevice_isRejected() {
        #expect(check(JWSTests.claims(sub: "dev-2")) == .invalidBundle)
    }

    @Test func replayedOrOlderSeq_isRejected() {
        #expect(check(JWSTests.claims(seq: 5), applied: 5) == .invalidBundle)
        #expect(check(JWSTests.claims(seq: 4), applied: 5) == .invalidBundle)
    }

    @Test func expiredBundle_isRejected() {
        #expect(check(JWSTests.claims(exp: 1_800_000_000), now: 1_800_000_001) == .invalidBundle)
    }

    @Test func pemBreakingTheRules_isRejected() {
        var claims = JWSTests.claims()
        let crlf = JWSTests.ca.pem.replacingOccurrences(of: "\n", with: "\r\n")
        claims.ops = [BundleOp(op: .write, tag: 42, type: 0, sha256: Hex.sha256(Array(crlf.utf8)), pem: crlf)]
        #expect(check(claims) == .invalidPEM)
    }

    @Test func digestMismatch_isRejected() {
        var claims = JWSTests.claims()
        claims.ops[0].sha256 = String(repeating: "0", count: 64)
        #expect(check(claims) == .invalidBundle)
    }

    @Test func credentialOver4KB_isRejected() throws {
        var issued: [CertificateFactory.Issued] = []
        while CertificateFactory.chain(issued).utf8.count <= 4096 {
            issued.append(try CertificateFactory.rootCA(commonName: "Oversize \(issued.count)"))
        }
        var claims = JWSTests.claims()
        claims.ops = [.write(tag: 42, type: 0, pem: CertificateFactory.chain(issued))]
        #expect(check(claims) == .credentialTooLarge)
    }
}

@Suite struct PartsTests {
    static let jws = try! JWS.sign(JWSTests.claims(), with: JWSTests.key)

    @Test func everyPacketFitsMaxMessage_forAllSizesAndTopicLengths() throws {
        for idLength in [1, 17, 64, 128] {
            let topic = Topics.bundle(String(repeating: "d", count: idLength))
            for maxMessage in 256...4096 {
                let parts = try Parts.split(
                    jws: Self.jws, jti: "00112233445566778899aabbccddeeff", topic: topic, maxMessage: maxMessage)
                for payload in parts {
                    let size = Parts.publishPacketSize(topicBytes: topic.utf8.count, payloadBytes: payload.count)
                    #expect(size <= maxMessage, "id \(idLength), maxMessage \(maxMessage): packet of \(size)")
                }
                let rebuilt = try parts.map { try BundlePart.parse($0).data }.joined()
                #expect(rebuilt == Self.jws)
            }
        }
    }

    @Test func bigBundlesUseFewParts_atTheNRF91Limit() throws {
        let parts = try Parts.split(jws: Self.jws, jti: "j", topic: "dev-1/certs", maxMessage: 2048)
        #expect(
            parts.count == (Self.jws.utf8.count + 1999) / 2000 || parts.count == (Self.jws.utf8.count + 1949) / 1950)
    }

    @Test func tooSmallMaxMessage_isAnError() {
        #expect(throws: CertrotError.self) {
            try Parts.split(
                jws: Self.jws, jti: "00112233445566778899aabbccddeeff", topic: String(repeating: "d", count: 200),
                maxMessage: 200)
        }
    }

    @Test func packetSize_matchesMQTT311() {
        // 1 fixed byte + 1 length byte + (2 + 5 topic) + 2 packet id + 10 payload = 21
        #expect(Parts.publishPacketSize(topicBytes: 5, payloadBytes: 10) == 21)
        // Remaining length 128 needs two bytes.
        #expect(Parts.publishPacketSize(topicBytes: 5, payloadBytes: 119) == 131)
    }

    @Test func reassembly_handlesOutOfOrderAndDuplicateParts() throws {
        let payloads = try Parts.split(jws: Self.jws, jti: "j1", topic: "dev-1/certs", maxMessage: 512)
        #expect(payloads.count > 3)
        var parts = try payloads.map { try BundlePart.parse($0) }
        parts.reverse()
        var assembler = PartAssembler(capacity: 1 << 16)
        #expect(assembler.add(parts[0]) == .waiting)
        #expect(assembler.add(parts[0]) == .waiting)
        #expect(assembler.missing.count == payloads.count - 1)
        var outcome = PartAssembler.Outcome.waiting
        for part in parts.dropFirst() { outcome = assembler.add(part) }
        #expect(outcome == .complete(jws: Self.jws))
    }

    @Test func reassembly_refusesBundlesLargerThanItsBuffer() throws {
        let payloads = try Parts.split(jws: Self.jws, jti: "j1", topic: "dev-1/certs", maxMessage: 512)
        var assembler = PartAssembler(capacity: 600)
        var sawTooLarge = false
        for payload in payloads {
            if case .tooLarge = assembler.add(try BundlePart.parse(payload)) {
                sawTooLarge = true
                break
            }
        }
        #expect(sawTooLarge)
    }
}

@Suite struct TrustKeyTests {
    @Test func trustKeyOp_carriesAJWKWhoseThumbprintIsItsKid() throws {
        let next = SigningKey.generate().publicKey
        let op = BundleOp.trustKey(next)
        try BundleCheck.checkOp(op, profile: .nrf91)
        #expect(try VerificationKey(jwk: op.jwk!) == next)
        var forged = op
        forged.kid = SigningKey.generate().kid
        #expect(throws: CertrotError.self) { try BundleCheck.checkOp(forged, profile: .nrf91) }
        var broken = op
        broken.jwk?.x = "AAAA"
        #expect(throws: CertrotError.self) { try BundleCheck.checkOp(broken, profile: .nrf91) }
        let encoded = String(decoding: try JSONCoding.encoder.encode(op), as: UTF8.self)
        #expect(
            encoded
                == #"{"jwk":{"crv":"P-256","kty":"EC","x":"\#(op.jwk!.x)","y":"\#(op.jwk!.y)"},"kid":"\#(next.kid)","op":"trust_key"}"#
        )
    }

    @Test func inventoryKeys_areValidated() throws {
        let ok = try Inventory.parse(Array(#"{"v":1,"seq":0,"creds":[],"keys":["abc-_1"]}"#.utf8))
        #expect(ok.keys == ["abc-_1"])
        #expect(throws: CertrotError.self) {
            try Inventory.parse(Array(#"{"v":1,"seq":0,"creds":[],"keys":["a b"]}"#.utf8))
        }
        let many = (0..<9).map { "\"k\($0)\"" }.joined(separator: ",")
        #expect(throws: CertrotError.self) {
            try Inventory.parse(Array(#"{"v":1,"seq":0,"creds":[],"keys":[\#(many)]}"#.utf8))
        }
    }
}

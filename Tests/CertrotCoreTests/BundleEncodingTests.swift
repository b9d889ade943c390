import Crypto
import Foundation
import Testing

@testable import CertrotCore

/// The implementations the byte-level code replaced, kept as references: Foundation's base64 translated to base64url.
enum Reference {
    static func encode<Bytes: DataProtocol>(_ bytes: Bytes) -> String {
        var text = Data(bytes).base64EncodedString()
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    static func decode(_ text: String) -> [UInt8]? {
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        guard text.utf8.allSatisfy(alphabet.contains) else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        switch standard.utf8.count % 4 {
        case 0: break
        case 2: standard += "=="
        case 3: standard += "="
        default: return nil
        }
        guard let bytes = Data(base64Encoded: standard).map(Array.init) else { return nil }
        guard encode(bytes) == text else { return nil }
        return bytes
    }

    static func json(_ claims: BundleClaims) throws -> [UInt8] {
        Array(try JSONCoding.encoder.encode(claims))
    }
}

@Suite struct BundleJSONTests {
    /// Characters chosen to stress escaping: quotes, backslashes, every C0 control, DEL, `/`, non-ASCII, emoji.
    static let pool: [Unicode.Scalar] =
        (0x00...0x1F).map { Unicode.Scalar(UInt8($0)) } + [
            "\"", "\\", "/", "\u{7F}", "a", "Z", "0", " ", "-", "=", "+", "\u{80}",
            "\u{9F}", "\u{A0}", "é", "ß", "\u{2028}", "\u{2029}", "\u{FEFF}", "中", "\u{FFFD}", "\u{FFFF}", "\u{10000}",
            "👍",
            "\u{1F3FD}", "🇸", "🇪", "\u{200D}", "\u{301}", "\u{10FFFF}",
        ]

    static func string(_ rng: inout SplitMix64) -> String {
        let length = Int.random(in: 0...24, using: &rng)
        var scalars = String.UnicodeScalarView()
        for _ in 0..<length {
            if Int.random(in: 0..<8, using: &rng) == 0 {
                // Any scalar at all, surrogates excepted.
                var value = UInt32.random(in: 0...0x10FFFF, using: &rng)
                if (0xD800...0xDFFF).contains(value) { value -= 0x800 }
                scalars.append(Unicode.Scalar(value)!)
            } else {
                scalars.append(pool.randomElement(using: &rng)!)
            }
        }
        return String(scalars)
    }

    static func integer(_ rng: inout SplitMix64) -> Int64 {
        [
            0, 1, -1, 9, 10, -10, .max, .min, .max - 1, .min + 1, Int64.random(in: .min ... .max, using: &rng),
            Int64.random(in: -100_000...100_000, using: &rng),
        ].randomElement(using: &rng)!
    }

    static func maybe<T>(_ rng: inout SplitMix64, _ make: (inout SplitMix64) -> T) -> T? {
        Bool.random(using: &rng) ? make(&rng) : nil
    }

    static func op(_ rng: inout SplitMix64) -> BundleOp {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            return .write(tag: integer(&rng), type: Int(integer(&rng)), pem: string(&rng))
        case 1:
            return .delete(tag: integer(&rng), type: Int(integer(&rng)))
        case 2:
            return .trustKey(SigningKey.generate().publicKey)
        default:
            // Any kind with any members present or absent, the JWK included.
            var jwk = JWK(SigningKey.generate().publicKey)
            jwk.kty = string(&rng)
            jwk.crv = string(&rng)
            jwk.x = string(&rng)
            return BundleOp(
                op: [.write, .delete, .trustKey].randomElement(using: &rng)!, tag: maybe(&rng, integer),
                type: maybe(&rng) { Int(integer(&$0)) }, sha256: maybe(&rng, string), pem: maybe(&rng, string),
                jwk: Bool.random(using: &rng) ? jwk : nil, kid: maybe(&rng, string))
        }
    }

    static func claims(_ rng: inout SplitMix64) -> BundleClaims {
        BundleClaims(
            iss: string(&rng), sub: string(&rng), jti: string(&rng), iat: integer(&rng), exp: integer(&rng),
            seq: integer(&rng), ops: (0..<Int.random(in: 0...4, using: &rng)).map { _ in op(&rng) })
    }

    @Test func encoded_isJSONEncodersBytes_forRandomClaims() throws {
        var rng = SplitMix64(seed: 0x5EED_CE27_0001)
        for index in 0..<1500 {
            let claims = Self.claims(&rng)
            let expected = try Reference.json(claims)
            let actual = claims.encoded()
            #expect(
                actual == expected,
                "case \(index): \(String(decoding: actual, as: UTF8.self)) vs \(String(decoding: expected, as: UTF8.self))"
            )
            if actual != expected { return }
        }
    }

    @Test func encoded_escapesEveryScalarAsJSONEncoderDoes() throws {
        // Every Unicode scalar, 4,096 to a string, in `sub`, `pem` and a JWK member.
        for start in stride(from: UInt32(0), through: 0x10FFFF, by: 4096) {
            let text = String(String.UnicodeScalarView((start..<start + 4096).compactMap(Unicode.Scalar.init)))
            var jwk = JWK(JWSTests.key.publicKey)
            jwk.y = text
            let claims = BundleClaims(
                sub: text, jti: "j", iat: 0, exp: 0, seq: 0,
                ops: [BundleOp(op: .write, tag: 1, type: 2, sha256: nil, pem: text, jwk: jwk, kid: nil)])
            #expect(claims.encoded() == (try Reference.json(claims)), "scalars from \(String(start, radix: 16))")
        }
    }

    @Test func encoded_isJSONEncodersBytes_forRealBundles() throws {
        let trust = JWSTests.claims()
        var rotation = trust
        rotation.ops = [.trustKey(SigningKey.generate().publicKey)] + trust.ops + [.delete(tag: 0, type: 6)]
        for claims in [trust, rotation, BundleClaims(sub: "", jti: "", iat: 0, exp: 0, seq: 0, ops: [])] {
            #expect(claims.encoded() == (try Reference.json(claims)))
        }
    }

    @Test func signedBundle_hasTheHeaderAndPayloadJSONEncoderWouldGive() throws {
        let claims = JWSTests.claims()
        let key = JWSTests.key
        let jws = try JWS.sign(claims, with: key)
        let pieces = jws.split(separator: ".", omittingEmptySubsequences: false)
        #expect(pieces.count == 3)
        let header = #"{"alg":"ES256","kid":"\#(key.kid)","typ":"certrot-bundle+jwt"}"#
        #expect(String(pieces[0]) == Reference.encode(Array(header.utf8)))
        #expect(String(pieces[1]) == Reference.encode(try Reference.json(claims)))
        #expect(pieces[2].utf8.count == 86)
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: Base64URL.decode(pieces[2])!)
        #expect(
            key.publicKey.publicKey.isValidSignature(
                signature, for: Array(jws.utf8.prefix(pieces[0].count + 1 + pieces[1].count))))

        let request = try JWS.sign(payload: Array(#"{"a":"b/c"}"#.utf8), typ: "certrot-rpc+jwt", with: key)
        let verified = try JWS.verify(request, typ: "certrot-rpc+jwt", keys: [key.publicKey])
        #expect(verified.payload == Array(#"{"a":"b/c"}"#.utf8))
        #expect(
            request.split(separator: ".")[0]
                == Substring(
                    Reference.encode(Array(#"{"alg":"ES256","kid":"\#(key.kid)","typ":"certrot-rpc+jwt"}"#.utf8))))
    }
}

@Suite struct Base64URLTests {
    @Test func encodeAndDecode_matchFoundation_forEveryLengthTo300() throws {
        var rng = SplitMix64(seed: 0xBA5E_0064)
        for length in 0...300 {
            for round in 0..<4 {
                // Round 0 is all 0xFF, so every sextet value 63 ('_') and the top bits are exercised.
                let bytes =
                    round == 0
                    ? [UInt8](repeating: 0xFF, count: length)
                    : (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let expected = Reference.encode(bytes)
                #expect(Base64URL.encode(bytes) == expected, "length \(length)")
                #expect(Base64URL.encode(Data(bytes)) == expected)
                #expect(Base64URL.encode(bytes[...]) == expected)
                #expect(Base64URL.decode(expected) == bytes)
                #expect(Base64URL.decode(Substring("." + expected + ".").dropFirst().dropLast()) == bytes)
            }
        }
        let all = (0...255).map(UInt8.init)
        #expect(Base64URL.decode(Base64URL.encode(all)) == all)
    }

    @Test func decode_rejectsWhatIsNotCanonicalUnpaddedBase64URL() {
        for text in [
            "QQ==", "QQ=", "QUI=", "QUJD====", "=", "====", "a+bc", "a/bc", "ab+", "ab/", "QU I", " QUI", "QUI ",
            "QUI\n",
            "QU\tI", "QUJDRA\r\n", "Q", "QUJDR", "QUJDRUZHS", "QR", "QUJ", "QUJDRB", "AB", "AAB", "Ah", "AAh", "A_",
            "AAf",
            "QUJDRé", "QU\u{0}I", "QUI\u{7F}",
        ] {
            #expect(Base64URL.decode(text) == nil, "\(text.debugDescription)")
            #expect(Reference.decode(text) == nil, "reference accepts \(text.debugDescription)")
        }
        #expect(Base64URL.decode("") == [])
        #expect(Base64URL.decode("QQ") == [0x41])
        #expect(Base64URL.decode("QUI") == [0x41, 0x42])
        #expect(Base64URL.decode("__8") == [0xFF, 0xFF])
    }

    @Test func decode_agreesWithTheReference_onEveryShortTextAndRandomLongerOnes() {
        // Every 1- and 2-character text over the alphabet and its near misses, every last character of a
        // 3-character text, then random texts of 4…16 characters.
        let characters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \n\t.é")
        var texts: [String] = []
        for a in characters {
            texts.append(String(a))
            for b in characters {
                texts.append(String([a, b]))
                texts.append(String(["Q", a, b]))
            }
        }
        var rng = SplitMix64(seed: 0xDEC0DE)
        for _ in 0..<20_000 {
            let length = Int.random(in: 4...16, using: &rng)
            // Mostly alphabet, so that many decode and the last-character rule is reached.
            texts.append(
                String(
                    (0..<length).map { _ in
                        characters[
                            Int.random(
                                in: 0..<(Int.random(in: 0..<20, using: &rng) == 0 ? characters.count : 64), using: &rng)
                        ]
                    }))
        }
        var accepted = 0
        for text in texts {
            let actual = Base64URL.decode(text)
            #expect(actual == Reference.decode(text), "\(text.debugDescription)")
            if actual != Reference.decode(text) { return }
            if actual != nil { accepted += 1 }
        }
        #expect(accepted > texts.count / 5)
    }
}

@Suite struct DecodedVerificationTests {
    @Test func checkingADecodedJWS_isCheckingTheText() throws {
        let key = JWSTests.key
        let good = try JWS.sign(JWSTests.claims(), with: key)
        let otherKey = try JWS.sign(JWSTests.claims(), with: SigningKey.generate())
        let otherDevice = try JWS.sign(JWSTests.claims(sub: "dev-2"), with: key)
        var tampered = Array(good.utf8)
        tampered[tampered.count - 5] =
            tampered[tampered.count - 5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let checker = BundleCheck(
            device: "dev-1", keys: [key.publicKey], profile: .nrf91, appliedSeq: 0, now: 1_800_000_100)
        func outcome(_ body: () throws(CertrotError) -> BundleClaims) -> Result<BundleClaims, CertrotError> {
            do throws(CertrotError) { return .success(try body()) } catch { return .failure(error) }
        }
        for jws in [good, otherKey, otherDevice, String(decoding: tampered, as: UTF8.self)] {
            let decoded = try JWS.decode(jws)
            let fromText = outcome { () throws(CertrotError) in try checker.check(jws) }
            let fromDecoded = outcome { () throws(CertrotError) in try checker.check(decoded) }
            switch (fromText, fromDecoded) {
            case (.success(let a), .success(let b)): #expect(a == b)
            case (.failure(let a), .failure(let b)): #expect(a.code == b.code && a.description == b.description)
            default: Issue.record("check(jws) and check(decoded) disagree for \(jws.prefix(40))")
            }
            #expect(
                (try? JWS.verify(jws, keys: [key.publicKey]))?.claims
                    == (try? JWS.verify(decoded, keys: [key.publicKey]))?.claims)
        }
        #expect((try? checker.check(good)) == JWSTests.claims())
    }
}

@Suite struct BundleJSONReadingTests {
    enum Outcome: Equatable {
        case claims(BundleClaims)
        case error(String)
    }

    /// What JSONDecoder makes of a payload, with the message `JWS.decode` would give.
    static func reference(_ bytes: [UInt8]) -> Outcome {
        do { return .claims(try JSONDecoder().decode(BundleClaims.self, from: Data(bytes))) } catch {
            return .error("JWS payload: \(describe(error))")
        }
    }

    /// What `JWS.decode` makes of `payload`, signed as a bundle.
    static func decoded(_ payload: [UInt8]) -> Outcome {
        let jws = try! JWS.sign(payload: payload, typ: JWSHeader.type, with: JWSTests.key)
        do throws(CertrotError) { return .claims(try JWS.decode(jws).claims) } catch { return .error(error.message) }
    }

    @Test func canonicalClaims_parseToJSONDecodersResult() throws {
        var rng = SplitMix64(seed: 0x5EED_CE27_0002)
        for index in 0..<1500 {
            let bytes = BundleJSONTests.claims(&rng).encoded()
            let expected = try JSONDecoder().decode(BundleClaims.self, from: Data(bytes))
            let parsed = BundleClaims(canonical: bytes)
            #expect(parsed == expected, "case \(index)")
            #expect(parsed?.encoded() == bytes, "case \(index)")
            if parsed != expected { return }
        }
        let header = Array(#"{"alg":"ES256","kid":"\#(JWSTests.key.kid)","typ":"certrot-bundle+jwt"}"#.utf8)
        #expect(JWSHeader(canonical: header) == (try JSONDecoder().decode(JWSHeader.self, from: Data(header))))
        #expect(JWSHeader(canonical: Array(#"{"alg":"ES256","kid":"a\/b","typ":"t"}"#.utf8)) == nil)
        #expect(JWSHeader(canonical: Array(#"{"alg":"ES256", "kid":"k","typ":"t"}"#.utf8)) == nil)
        #expect(JWSHeader(canonical: Array(#"{"alg":"ES256","kid":"k","typ":"t","x":1}"#.utf8)) == nil)
    }

    @Test func otherJSON_isLeftToJSONDecoder() throws {
        let base =
            #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[{"op":"write","pem":"P","sha256":"s","tag":4,"type":0}],"seq":3,"sub":"d"}"#
        #expect(BundleClaims(canonical: Array(base.utf8)) != nil)
        let variants =
            [
                #"{ "exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"} "#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[ ],"seq":3,"sub":"d"}"#,
                #"{"iat":1,"exp":2,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d","x":[1]}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d","sub":"e"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"a\/b"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"\u0041"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"\u001F"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"\ud83d\ude00"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"\x"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":-0,"sub":"d"}"#,
                #"{"exp":2,"iat":01,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3.0,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3e0,"sub":"d"}"#,
                #"{"exp":9223372036854775808,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"}"#,
                #"{"exp":-9223372036854775809,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[{"op":"write","tag":null}],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[{"op":"wipe"}],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[{"type":0,"op":"delete"}],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[{"op":"delete"},],"seq":3,"sub":"d"}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3}"#,
                #"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":"d"}x"#,
                #"[]"#, "",
            ].map { Array($0.utf8) } + [
                Array(#"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":""#.utf8) + [0xC3, 0x28]
                    + Array(#""}"#.utf8),
                Array(#"{"exp":2,"iat":1,"iss":"certrot","jti":"j","ops":[],"seq":3,"sub":""#.utf8) + [0x0A]
                    + Array(#""}"#.utf8),
            ]
        for bytes in variants {
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(BundleClaims(canonical: bytes) == nil, "\(text)")
            #expect(Self.decoded(bytes) == Self.reference(bytes), "\(text)")
        }
    }

    @Test func mutatedCanonicalClaims_parseOnlyAsJSONDecoderWould() {
        var rng = SplitMix64(seed: 0x5EED_CE27_0003)
        let significant = Array(#"{}[]",:\/ -+.0159aeuflnrtx"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xFF]
        var parsedCount = 0
        for index in 0..<3000 {
            var bytes = BundleJSONTests.claims(&rng).encoded()
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0...bytes.count, using: &rng)
                let byte = significant.randomElement(using: &rng)!
                switch Int.random(in: 0..<3, using: &rng) {
                case 0 where at < bytes.count: bytes[at] = byte
                case 1 where at < bytes.count: bytes.remove(at: at)
                default: bytes.insert(byte, at: at)
                }
            }
            guard let parsed = BundleClaims(canonical: bytes) else { continue }
            parsedCount += 1
            let expected = Self.reference(bytes)
            #expect(expected == .claims(parsed), "case \(index): \(String(decoding: bytes, as: UTF8.self))")
            #expect(parsed.encoded() == bytes)
        }
        // Mutations inside strings keep the JSON canonical often enough to exercise the fast path.
        #expect(parsedCount > 100)
    }

    @Test func signedBundles_decodeAsBefore() throws {
        var rng = SplitMix64(seed: 0x5EED_CE27_0004)
        for _ in 0..<200 {
            let claims = BundleJSONTests.claims(&rng)
            let decoded = try JWS.decode(try JWS.sign(claims, with: JWSTests.key))
            #expect(decoded.claims == claims)
            #expect(decoded.claims.encoded() == claims.encoded())
        }
    }
}

@Suite struct JWSSplitTests {
    /// The split by characters `JWS.decode` used to make: its error, or `nil` for three base64url segments.
    static func formerSplitError(_ jws: String) -> String? {
        let pieces = jws.split(separator: ".", omittingEmptySubsequences: false)
        guard pieces.count == 3 else { return "a JWS compact serialisation has 3 parts; this has \(pieces.count)" }
        guard pieces.allSatisfy({ Reference.decode(String($0)) != nil }) else { return "JWS parts are not base64url" }
        return nil
    }

    @Test func malformedText_failsAsItDidWithTheSplitByCharacters() {
        var texts = [
            "", ".", "..", "...", "a", "a.b", "QQ.QQ.QQ.QQ", "QQ.QQ.QQ.\u{301}", "QQ.\u{301}QQ.QQ", "QQ.QQ\u{301}.QQ",
            ".\u{301}.", "QQ\r\n.QQ.QQ", "QQ.QQ.Q", "QQ==.QQ.QQ", "é.é.é", "QQ.QQ.QQ",
        ]
        var rng = SplitMix64(seed: 0x5EED_CE27_0005)
        let pieces = ["Q", "A", "QQ", ".", ".", "=", "\u{301}", "\r", "\n", "é", "👍", "_", "-"]
        for _ in 0..<5000 {
            texts.append(
                (0..<Int.random(in: 0...10, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined())
        }
        for text in texts {
            let expected = Self.formerSplitError(text)
            #expect((JWS.segments(text) == nil) == (expected != nil), "\(text.debugDescription)")
            do {
                _ = try JWS.decode(text)
                Issue.record("\(text.debugDescription) decoded")
            } catch {
                if let expected {
                    #expect(error.message == expected, "\(text.debugDescription)")
                } else {
                    // Three base64url segments: the header's JSON is what fails.
                    #expect(error.message.hasPrefix("JWS header"), "\(text.debugDescription)")
                }
            }
            let rpc = (try? JWS.verify(text, typ: "certrot-rpc+jwt", keys: [JWSTests.key.publicKey]))
            #expect(rpc == nil)
        }
    }
}

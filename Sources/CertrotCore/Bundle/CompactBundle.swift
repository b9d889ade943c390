import Crypto
import Foundation
import Synchronization
import X509

/// Compact bundles (docs/protocol.md §12): the same claims as a JWS bundle, as a tagged COSE_Sign1 (RFC 9052) over
/// a CBOR payload, with certificates as DER. For devices whose inventory says `"formats":["cose"]`.
///
/// - Protected header `{1: -7, 4: kid}`: alg ES256 and the 32 raw bytes of the signing key's RFC 7638 thumbprint
///   (the JWS `kid`, not base64url), both covered by the signature; the unprotected header is empty.
/// - Payload: a CBOR map with text keys `iss`, `sub`, `jti` (16-byte bstr), `iat`, `exp`, `seq`, `ops`. A `write`
///   op carries `der` (an array of bstr, one per certificate, in order) and `sha256` (32-byte bstr: the SHA-256 of
///   the PEM normal form the device builds from them, §3.5) instead of `pem`; `trust_key` carries `jwk` with `x`
///   and `y` as 32-byte bstr and `kid` as the 32-byte thumbprint; the other ops as in the JWS.
/// - Encoded in the core deterministic encoding, so a re-sent bundle is the same bytes; decoding refuses any other.
public enum CompactBundle {
    /// The name a device lists in its inventory's `formats`.
    public static let format = "cose"

    /// The signed COSE_Sign1, tagged (18).
    ///
    /// Written byte by byte around the encoded payload, which is copied twice and encoded once: the
    /// `Sig_structure` `["Signature1", protected, h'', payload]` and the message
    /// `18([protected, {}, payload, signature])` are fixed shapes (the same bytes ``COSESign1`` encodes; a test
    /// holds them equal), and the protected header is made once per key.
    public static func sign(_ claims: BundleClaims, with key: SigningKey) throws(CertrotError) -> [UInt8] {
        let protected = try protectedHeader(kid: key.kid)
        let payload = try payload(claims).encoded
        var toBeSigned: [UInt8] = [0x84, 0x6A]
        toBeSigned.reserveCapacity(payload.count + protected.count + 24)
        toBeSigned.append(contentsOf: "Signature1".utf8)
        CBOR.byteString(protected, into: &toBeSigned)
        toBeSigned.append(0x40)
        CBOR.byteString(payload, into: &toBeSigned)
        let signature = try key.signature(for: toBeSigned).rawRepresentation
        var message: [UInt8] = [0xC0 | UInt8(COSESign1.tag), 0x84]
        message.reserveCapacity(payload.count + protected.count + signature.count + 16)
        CBOR.byteString(protected, into: &message)
        message.append(0xA0)
        CBOR.byteString(payload, into: &message)
        CBOR.byteString(Array(signature), into: &message)
        return message
    }

    /// `{1: -7, 4: kid}` encoded, for a key id (base64url); the last few kept.
    static func protectedHeader(kid: String) throws(CertrotError) -> [UInt8] {
        if let known = headerCache.withLock({ $0[kid] }) { return known }
        let header = CBOR.map([(.unsigned(1), .int(COSESign1.es256)), (.unsigned(4), .bytes(try kidBytes(kid)))])
            .encoded
        headerCache.withLock { cache in
            if cache.count >= 16 { cache.removeAll() }
            cache[kid] = header
        }
        return header
    }

    private static let headerCache = Mutex<[String: [UInt8]]>([:])

    /// The claims as the CBOR payload.
    public static func payload(_ claims: BundleClaims) throws(CertrotError) -> CBOR {
        guard let jti = Hex.decode(claims.jti), jti.count == 16 else {
            throw CertrotError(.invalidBundle, "a compact bundle's jti is 16 bytes (32 hex digits)")
        }
        return .map([
            (.text("iss"), .text(claims.iss)), (.text("sub"), .text(claims.sub)), (.text("jti"), .bytes(jti)),
            (.text("iat"), .int(claims.iat)), (.text("exp"), .int(claims.exp)), (.text("seq"), .int(claims.seq)),
            (.text("ops"), .array(try claims.ops.map(op))),
        ])
    }

    static func op(_ op: BundleOp) throws(CertrotError) -> CBOR {
        var pairs: [(key: CBOR, value: CBOR)] = [(.text("op"), .text(op.op.rawValue))]
        if let tag = op.tag { pairs.append((.text("tag"), .int(tag))) }
        if let type = op.type { pairs.append((.text("type"), .int(Int64(type)))) }
        switch op.op {
        case .write:
            guard let pem = op.pem, let digest = op.sha256.flatMap(Hex.decode), digest.count == 32 else {
                throw CertrotError(.invalidBundle, "a write op needs its pem and sha256")
            }
            pairs.append((.text("der"), .array(try certificates(pem: pem).map { .bytes($0) })))
            pairs.append((.text("sha256"), .bytes(digest)))
        case .trustKey:
            guard let jwk = op.jwk, let kid = op.kid, let x = Base64URL.decode(jwk.x), let y = Base64URL.decode(jwk.y)
            else { throw CertrotError(.invalidBundle, "a trust_key op needs its jwk and kid") }
            pairs.append(
                (
                    .text("jwk"),
                    .map([
                        (.text("kty"), .text(jwk.kty)), (.text("crv"), .text(jwk.crv)), (.text("x"), .bytes(x)),
                        (.text("y"), .bytes(y)),
                    ])
                ))
            pairs.append((.text("kid"), .bytes(try kidBytes(kid))))
        case .keygen:
            if let subject = op.subject { pairs.append((.text("subject"), .text(subject))) }
        case .delete, .activate:
            break
        }
        return .map(pairs)
    }

    /// The DER of each certificate of a chain in PEM normal form. A campaign sends one chain to many devices, so
    /// the last few conversions are kept (the PEM parse and the normal-form check are most of a bundle's cost).
    static func certificates(pem: String) throws(CertrotError) -> [[UInt8]] {
        if let known = derCache.withLock({ $0[pem] }) { return known }
        let blocks = try PEM.parseBlocks(pem)
        guard PEM.encode(blocks) == pem, blocks.allSatisfy({ $0.label == "CERTIFICATE" }) else {
            throw CertrotError(.invalidBundle, "a compact write carries certificates in PEM normal form only (§3.5)")
        }
        let ders = blocks.map(\.der)
        derCache.withLock { cache in
            if cache.count >= 16 { cache.removeAll() }
            cache[pem] = ders
        }
        return ders
    }

    private static let derCache = Mutex<[String: [[UInt8]]]>([:])

    static func kidBytes(_ kid: String) throws(CertrotError) -> [UInt8] {
        guard let bytes = Base64URL.decode(kid), bytes.count == 32 else {
            throw CertrotError(.invalidBundle, "a kid is a 32-byte SHA-256 thumbprint")
        }
        return bytes
    }

    /// A compact bundle taken apart: the signer's kid (base64url, as in a JWS), the claims in the JWS's terms (a
    /// write's `pem` rebuilt from its DER in normal form, its digest checked), and what the signature covers.
    public struct Decoded: Sendable {
        public var kid: String
        public var claims: BundleClaims
        public var message: COSESign1
    }

    /// Decodes without checking the signature (`certrot bundle inspect`). Refuses anything but a tagged
    /// COSE_Sign1 in the deterministic encoding whose protected header is exactly `{1: -7, 4: kid}`, a payload of
    /// the documented shape, DER that does not parse as X.509, and a write whose rebuilt PEM has another digest.
    public static func decode(_ bytes: [UInt8]) throws(CertrotError) -> Decoded {
        guard case .tagged(let tag, _) = try CBOR.decodeDeterministic(bytes), tag == COSESign1.tag else {
            throw CertrotError(.invalidBundle, "a compact bundle is a COSE_Sign1 with CBOR tag 18")
        }
        let message = try COSESign1.parse(bytes)
        let header = try CBOR.decodeDeterministic(message.protected)
        guard case .map(let fields) = header, fields.count == 2, header[.unsigned(1)]?.int == COSESign1.es256,
            let kid = header[.unsigned(4)]?.bytes, kid.count == 32
        else { throw CertrotError(.invalidBundle, "the protected header must be {1: -7 (ES256), 4: 32-byte kid}") }
        guard case .map(let unprotected) = message.unprotected, unprotected.isEmpty else {
            throw CertrotError(.invalidBundle, "the unprotected header must be empty")
        }
        guard message.signature.count == 64 else {
            throw CertrotError(.invalidBundle, "an ES256 signature is 64 bytes")
        }
        let payload = try CBOR.decodeDeterministic(message.payload)
        return Decoded(kid: Base64URL.encode(kid), claims: try claims(payload), message: message)
    }

    /// Decodes and verifies against the pinned keys, selected by `kid`.
    public static func verify(_ bytes: [UInt8], keys: [VerificationKey]) throws(CertrotError) -> Decoded {
        let decoded = try decode(bytes)
        guard let key = keys.first(where: { $0.kid == decoded.kid }) else {
            throw CertrotError(.unknownKey, "no trusted key has kid \(decoded.kid)")
        }
        guard decoded.message.isValid(for: key.publicKey) else {
            throw CertrotError(.badSignature, "the ES256 signature does not verify")
        }
        return decoded
    }

    static func claims(_ payload: CBOR) throws(CertrotError) -> BundleClaims {
        func fail(_ why: String) -> CertrotError { CertrotError(.invalidBundle, "compact bundle payload: \(why)") }
        guard case .map = payload else { throw fail("not a map") }
        guard let iss = payload[.text("iss")]?.text, let sub = payload[.text("sub")]?.text,
            let jti = payload[.text("jti")]?.bytes, jti.count == 16, let iat = payload[.text("iat")]?.int,
            let exp = payload[.text("exp")]?.int, let seq = payload[.text("seq")]?.int,
            let ops = payload[.text("ops")]?.array, !ops.isEmpty
        else { throw fail("needs iss, sub (text), jti (16-byte bstr), iat, exp, seq (integers) and ops") }
        return BundleClaims(
            iss: iss, sub: sub, jti: Hex.encode(jti), iat: iat, exp: exp, seq: seq,
            ops: try ops.enumerated().map { index, item throws(CertrotError) in try op(item, index: index) })
    }

    static func op(_ item: CBOR, index: Int) throws(CertrotError) -> BundleOp {
        func fail(_ why: String) -> CertrotError {
            CertrotError(.invalidBundle, "compact bundle op \(index + 1): \(why)")
        }
        guard let name = item[.text("op")]?.text, let kind = BundleOp.Kind(rawValue: name) else {
            throw fail("unknown or missing op")
        }
        let tag = item[.text("tag")]?.int
        let type = item[.text("type")]?.int.map { Int($0) }
        switch kind {
        case .write:
            guard let tag, let type, let der = item[.text("der")]?.array, !der.isEmpty,
                let digest = item[.text("sha256")]?.bytes, digest.count == 32
            else { throw fail("a write needs tag, type, der (array of bstr) and sha256 (32-byte bstr)") }
            var blocks: [PEMBlock] = []
            for (number, certificate) in der.enumerated() {
                guard let bytes = certificate.bytes, (try? Certificate(derEncoded: bytes)) != nil else {
                    throw fail("certificate \(number + 1) is not DER X.509")
                }
                blocks.append(PEMBlock(label: "CERTIFICATE", der: bytes))
            }
            let pem = PEM.encode(blocks)
            guard Hex.sha256(Array(pem.utf8)) == Hex.encode(digest) else {
                throw fail("sha256 is not the digest of the PEM normal form of der")
            }
            return BundleOp(op: .write, tag: tag, type: type, sha256: Hex.encode(digest), pem: pem)
        case .delete:
            guard let tag, let type else { throw fail("a delete needs tag and type") }
            return .delete(tag: tag, type: type)
        case .trustKey:
            guard let jwk = item[.text("jwk")], let x = jwk[.text("x")]?.bytes, let y = jwk[.text("y")]?.bytes,
                x.count == 32, y.count == 32, jwk[.text("kty")]?.text == "EC", jwk[.text("crv")]?.text == "P-256",
                let kid = item[.text("kid")]?.bytes, kid.count == 32
            else { throw fail("a trust_key needs jwk {kty EC, crv P-256, x, y: 32-byte bstr} and a 32-byte kid") }
            // A point off the curve: invalid_key, as in a JWS bundle (VerificationKey says so).
            var op = BundleOp.trustKey(
                try VerificationKey(jwk: JWK(kty: "EC", crv: "P-256", x: Base64URL.encode(x), y: Base64URL.encode(y))))
            op.kid = Base64URL.encode(kid)  // as sent: the device recomputes and compares it
            return op
        case .keygen:
            guard let tag, let subject = item[.text("subject")]?.text else {
                throw fail("a keygen needs tag and subject")
            }
            return .keygen(tag: tag, subject: subject)
        case .activate:
            guard let tag else { throw fail("an activate needs tag") }
            return .activate(tag: tag)
        }
    }
}

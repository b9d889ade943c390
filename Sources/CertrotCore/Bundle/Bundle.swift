import Crypto
import Foundation

/// One operation of a bundle: write a credential into a sec tag, delete one, trust the next bundle-signing key,
/// generate a key in a sec tag (`keygen`), or switch the device's connection to a sec tag (`activate`).
public struct BundleOp: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        case write, delete
        case trustKey = "trust_key"
        case keygen, activate
    }

    public var op: Kind
    /// Sec tag and AT%CMNG type (`write`, `delete`).
    public var tag: Int64?
    public var type: Int?
    public var sha256: String?
    public var pem: String?
    /// The key to trust (`trust_key`) and its RFC 7638 thumbprint.
    public var jwk: JWK?
    public var kid: String?
    /// The subject the modem puts in its CSR (`keygen`).
    public var subject: String?

    public init(
        op: Kind, tag: Int64?, type: Int?, sha256: String?, pem: String?, jwk: JWK? = nil, kid: String? = nil,
        subject: String? = nil
    ) {
        self.op = op
        self.tag = tag
        self.type = type
        self.sha256 = sha256
        self.pem = pem
        self.jwk = jwk
        self.kid = kid
        self.subject = subject
    }

    /// Installs `key` as a further bundle-verification key on the device.
    public static func trustKey(_ key: VerificationKey) -> BundleOp {
        BundleOp(op: .trustKey, tag: nil, type: nil, sha256: nil, pem: nil, jwk: JWK(key), kid: key.kid)
    }

    public static func write(tag: Int64, type: Int, pem: String) -> BundleOp {
        BundleOp(op: .write, tag: tag, type: type, sha256: Hex.sha256(Array(pem.utf8)), pem: pem)
    }

    public static func delete(tag: Int64, type: Int) -> BundleOp {
        BundleOp(op: .delete, tag: tag, type: type, sha256: nil, pem: nil)
    }

    /// Deletes `tag`'s types 0, 1 and 2, generates a key in it (AT%KEYGEN) and publishes the CSR on `{id}/certs/csr`.
    public static func keygen(tag: Int64, subject: String) -> BundleOp {
        BundleOp(op: .keygen, tag: tag, type: nil, sha256: nil, pem: nil, subject: subject)
    }

    /// Reconnects using `tag`, keeping it as the active tag only if the connection succeeds.
    public static func activate(tag: Int64) -> BundleOp {
        BundleOp(op: .activate, tag: tag, type: nil, sha256: nil, pem: nil)
    }

    /// The most bytes of a `keygen` subject.
    public static let maxSubjectBytes = 256
}

/// The JWS payload of a bundle (docs/protocol.md).
public struct BundleClaims: Sendable, Equatable, Codable {
    public var iss: String
    public var sub: String
    public var jti: String
    public var iat: Int64
    public var exp: Int64
    public var seq: Int64
    public var ops: [BundleOp]

    public init(iss: String = "certrot", sub: String, jti: String, iat: Int64, exp: Int64, seq: Int64, ops: [BundleOp])
    {
        self.iss = iss
        self.sub = sub
        self.jti = jti
        self.iat = iat
        self.exp = exp
        self.seq = seq
        self.ops = ops
    }

    /// Default bundle lifetime: 7 days.
    public static let defaultLifetime: Int64 = 7 * 24 * 3600
}

public struct JWSHeader: Sendable, Equatable, Codable {
    public var alg: String
    public var kid: String
    public var typ: String

    public init(alg: String, kid: String, typ: String) {
        self.alg = alg
        self.kid = kid
        self.typ = typ
    }

    public static let type = "certrot-bundle+jwt"
}

/// JWS compact serialisation (RFC 7515) with ES256, the only algorithm certrot signs or accepts.
public enum JWS {
    /// Signs `claims`. `iat`/`exp` are whole seconds by construction (they are integers).
    public static func sign(_ claims: BundleClaims, with key: SigningKey) throws(CertrotError) -> String {
        try compact(typ: JWSHeader.type, payload: claims.encoded(), key: key)
    }

    public struct Decoded: Sendable {
        public var header: JWSHeader
        public var claims: BundleClaims
        public var signingInput: [UInt8]
        public var signature: [UInt8]
    }

    /// Splits and decodes without verifying the signature (for `bundle inspect` without a key).
    public static func decode(_ jws: String) throws(CertrotError) -> Decoded {
        guard let (headerBytes, payloadBytes, signature, signingInput) = segments(jws) else {
            // Not a JWS: the error the former split by characters gave (on ASCII text, as a JWS is, both splits agree).
            let count = jws.split(separator: ".", omittingEmptySubsequences: false).count
            guard count == 3 else {
                throw CertrotError(.invalidBundle, "a JWS compact serialisation has 3 parts; this has \(count)")
            }
            throw CertrotError(.invalidBundle, "JWS parts are not base64url")
        }
        let header: JWSHeader
        let claims: BundleClaims
        do {
            header =
                try JWSHeader(canonical: headerBytes) ?? JSONDecoder().decode(JWSHeader.self, from: Data(headerBytes))
        } catch {
            throw CertrotError(.invalidBundle, "JWS header: \(describe(error))")
        }
        guard header.alg == "ES256" else { throw CertrotError(.invalidBundle, "alg \(header.alg) is not ES256") }
        guard header.typ == JWSHeader.type else {
            throw CertrotError(.invalidBundle, "typ \(header.typ) is not \(JWSHeader.type)")
        }
        do {
            // What certrot signs takes the fast path; anything else is JSONDecoder's to accept or refuse.
            claims =
                try BundleClaims(canonical: payloadBytes)
                ?? JSONDecoder().decode(BundleClaims.self, from: Data(payloadBytes))
        } catch {
            throw CertrotError(.invalidBundle, "JWS payload: \(describe(error))")
        }
        return Decoded(header: header, claims: claims, signingInput: signingInput, signature: signature)
    }

    /// Splits a compact JWS at the bytes of `.` and base64url-decodes its segments; `nil` unless there are
    /// exactly three, each canonical base64url. Also returns the signing input (the text before the second dot).
    static func segments(
        _ jws: String
    ) -> (header: [UInt8], payload: [UInt8], signature: [UInt8], signingInput: [UInt8])? {
        var jws = jws
        return jws.withUTF8 { bytes in
            let dot = UInt8(ascii: ".")
            guard let first = bytes.firstIndex(of: dot), let second = bytes[(first + 1)...].firstIndex(of: dot),
                !bytes[(second + 1)...].contains(dot),
                let header = Base64URL.decode(bytes: UnsafeBufferPointer(rebasing: bytes[..<first])),
                let payload = Base64URL.decode(bytes: UnsafeBufferPointer(rebasing: bytes[(first + 1)..<second])),
                let signature = Base64URL.decode(bytes: UnsafeBufferPointer(rebasing: bytes[(second + 1)...]))
            else { return nil }
            return (header, payload, signature, Array(bytes[..<second]))
        }
    }

    /// Signs an arbitrary JSON payload with header typ `typ` (operator requests use `certrot-rpc+jwt`).
    public static func sign(payload: [UInt8], typ: String, with key: SigningKey) throws(CertrotError) -> String {
        try compact(typ: typ, payload: payload, key: key)
    }

    /// `BASE64URL(header).BASE64URL(payload).BASE64URL(signature)`: the signing input is built once as bytes,
    /// signed, and the signature appended to it.
    static func compact(typ: String, payload: [UInt8], key: SigningKey) throws(CertrotError) -> String {
        let header = Array(#"{"alg":"ES256","kid":"\#(key.kid)","typ":"\#(typ)"}"#.utf8)
        var jws: [UInt8] = []
        jws.reserveCapacity(Base64URL.encodedCount(header.count) + Base64URL.encodedCount(payload.count) + 2 + 86)
        Base64URL.append(header, to: &jws)
        jws.append(UInt8(ascii: "."))
        Base64URL.append(payload, to: &jws)
        let signature = try key.signature(for: jws)
        jws.append(UInt8(ascii: "."))
        Base64URL.append(signature.rawRepresentation, to: &jws)
        return String(decoding: jws, as: UTF8.self)
    }

    /// Verifies a JWS of type `typ` against `keys` (by `kid`) and returns the signing key's kid and the payload.
    public static func verify(
        _ jws: String, typ: String, keys: [VerificationKey]
    ) throws(CertrotError) -> (kid: String, payload: [UInt8]) {
        guard let (headerBytes, payload, signatureBytes, signingInput) = segments(jws) else {
            throw CertrotError(.invalidBundle, "not a JWS compact serialisation")
        }
        guard
            let header = JWSHeader(canonical: headerBytes)
                ?? (try? JSONDecoder().decode(JWSHeader.self, from: Data(headerBytes))),
            header.alg == "ES256",
            header.typ == typ
        else { throw CertrotError(.invalidBundle, "JWS header must say alg ES256 and typ \(typ)") }
        guard let key = keys.first(where: { $0.kid == header.kid }) else {
            throw CertrotError(.unknownKey, "no trusted key has kid \(header.kid)")
        }
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: signatureBytes),
            key.publicKey.isValidSignature(signature, for: signingInput)
        else { throw CertrotError(.badSignature, "the ES256 signature does not verify") }
        return (header.kid, payload)
    }

    /// Decodes and verifies against the pinned keys, selected by `kid`.
    public static func verify(_ jws: String, keys: [VerificationKey]) throws(CertrotError) -> Decoded {
        try verify(decode(jws), keys: keys)
    }

    /// Verifies a JWS already decoded (with ``decode(_:)``) against the pinned keys, selected by `kid`.
    @discardableResult
    public static func verify(_ decoded: Decoded, keys: [VerificationKey]) throws(CertrotError) -> Decoded {
        guard let key = keys.first(where: { $0.kid == decoded.header.kid }) else {
            throw CertrotError(.unknownKey, "no pinned key has kid \(decoded.header.kid)")
        }
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: decoded.signature),
            key.publicKey.isValidSignature(signature, for: decoded.signingInput)
        else { throw CertrotError(.badSignature, "the ES256 signature does not verify") }
        return decoded
    }
}

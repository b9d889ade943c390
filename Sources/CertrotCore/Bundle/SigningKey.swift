import Crypto
import Foundation

/// The ES256 (P-256) key that signs bundles. The private half never leaves this type: no description, no
/// encoding except ``pkcs8PEM`` for `certrot keys generate`.
public struct SigningKey: Sendable, CustomStringConvertible {
    public let privateKey: P256.Signing.PrivateKey
    /// The public key's RFC 7638 thumbprint, computed once: every signature's header carries it.
    public let kid: String

    public init(privateKey: P256.Signing.PrivateKey) {
        self.privateKey = privateKey
        kid = VerificationKey.thumbprint(privateKey.publicKey)
    }

    public static func generate() -> SigningKey { SigningKey(privateKey: P256.Signing.PrivateKey()) }

    /// Loads a PKCS#8 (or SEC 1) PEM private key.
    public init(pem: String) throws(CertrotError) {
        let privateKey: P256.Signing.PrivateKey
        do {
            privateKey = try P256.Signing.PrivateKey(pemRepresentation: pem)
        } catch {
            throw CertrotError(.invalidKey, "the signing key is not a P-256 private key in PEM form")
        }
        self.init(privateKey: privateKey)
    }

    public var pkcs8PEM: String { privateKey.pemRepresentation }
    public var publicKey: VerificationKey { VerificationKey(publicKey: privateKey.publicKey, kid: kid) }
    public var description: String { "SigningKey(kid: \(kid))" }
}

/// A public key as a JWK (RFC 7517), as the `trust_key` op carries it.
public struct JWK: Sendable, Equatable, Codable {
    public var kty: String
    public var crv: String
    public var x: String
    public var y: String

    public init(_ key: VerificationKey) {
        kty = "EC"
        crv = "P-256"
        x = Base64URL.encode(key.x)
        y = Base64URL.encode(key.y)
    }
}

/// A P-256 public key that verifies bundles, identified by its RFC 7638 JWK thumbprint (`kid`).
public struct VerificationKey: Sendable, Equatable {
    public let publicKey: P256.Signing.PublicKey
    /// RFC 7638 JWK SHA-256 thumbprint, base64url; computed once, as verification looks keys up by it.
    public let kid: String

    public init(publicKey: P256.Signing.PublicKey) {
        self.init(publicKey: publicKey, kid: Self.thumbprint(publicKey))
    }

    init(publicKey: P256.Signing.PublicKey, kid: String) {
        self.publicKey = publicKey
        self.kid = kid
    }

    public init(pem: String) throws(CertrotError) {
        let publicKey: P256.Signing.PublicKey
        do {
            publicKey = try P256.Signing.PublicKey(pemRepresentation: pem)
        } catch {
            throw CertrotError(.invalidKey, "not a P-256 public key in PEM form (SubjectPublicKeyInfo)")
        }
        self.init(publicKey: publicKey)
    }

    public static func == (lhs: VerificationKey, rhs: VerificationKey) -> Bool {
        lhs.publicKey.rawRepresentation == rhs.publicKey.rawRepresentation
    }

    /// From a PEM that holds either the public key or the private signing key (whose public half is taken).
    public init(anyPEM pem: String) throws(CertrotError) {
        if let signing = try? SigningKey(pem: pem) {
            self = signing.publicKey
        } else {
            try self.init(pem: pem)
        }
    }

    /// From a JWK (`kty` EC, `crv` P-256).
    public init(jwk: JWK) throws(CertrotError) {
        guard jwk.kty == "EC", jwk.crv == "P-256", let x = Base64URL.decode(jwk.x), let y = Base64URL.decode(jwk.y),
            x.count == 32, y.count == 32,
            let key = try? P256.Signing.PublicKey(x963Representation: [0x04] + x + y)
        else { throw CertrotError(.invalidKey, "the JWK is not a P-256 public key") }
        self.init(publicKey: key)
    }

    public var pem: String { publicKey.pemRepresentation }
    /// Uncompressed point, 0x04 ‖ X ‖ Y (65 bytes): what a device's crypto library imports.
    public var x963: [UInt8] { Array(publicKey.x963Representation) }
    public var x: [UInt8] { Array(x963[1..<33]) }
    public var y: [UInt8] { Array(x963[33..<65]) }

    /// The JWK with members in RFC 7638 order (lexicographic), which is also the thumbprint input.
    public var jwkJSON: String { Self.jwkJSON(publicKey) }

    static func jwkJSON(_ key: P256.Signing.PublicKey) -> String {
        let point = Array(key.x963Representation)
        return
            #"{"crv":"P-256","kty":"EC","x":"\#(Base64URL.encode(point[1..<33]))","y":"\#(Base64URL.encode(point[33..<65]))"}"#
    }

    static func thumbprint(_ key: P256.Signing.PublicKey) -> String {
        Base64URL.encode(Array(SHA256.hash(data: Array(jwkJSON(key).utf8))))
    }
}

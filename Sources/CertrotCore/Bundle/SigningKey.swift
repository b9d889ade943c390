import Crypto
import Foundation

/// A private P-256 key held outside certrot's memory: in a PKCS#11 token (`CertrotPKCS11`). It signs SHA-256
/// digests; the private half never reaches certrot.
public protocol ExternalSigner: Sendable {
    /// Where the key lives, for errors and logs (an RFC 7512 URI, without its PIN).
    var location: String { get }
    var publicKey: P256.Signing.PublicKey { get }
    /// ECDSA over a SHA-256 digest; throws ``CertrotError/Code/signerUnavailable`` when the key cannot be used
    /// now (the token is gone, its PIN locked), naming the location and the module's return code.
    func sign(digest: SHA256Digest) throws(CertrotError) -> P256.Signing.ECDSASignature
    /// Why the key cannot sign now, or nil when it can (as far as the last attempt showed).
    var problem: String? { get }
}

/// The ES256 (P-256) key that signs bundles: in memory (a PEM file) or in a token (``ExternalSigner``). The private
/// half never leaves this type: no description, no encoding except ``pkcs8PEM`` for `certrot keys generate`.
public struct SigningKey: Sendable, CustomStringConvertible {
    enum Backing: Sendable {
        case memory(P256.Signing.PrivateKey)
        case external(any ExternalSigner)
    }

    let backing: Backing
    public let publicKey: VerificationKey
    /// The public key's RFC 7638 thumbprint, computed once: every signature's header carries it.
    public var kid: String { publicKey.kid }

    public init(privateKey: P256.Signing.PrivateKey) {
        backing = .memory(privateKey)
        publicKey = VerificationKey(publicKey: privateKey.publicKey)
    }

    public init(external signer: any ExternalSigner) {
        backing = .external(signer)
        publicKey = VerificationKey(publicKey: signer.publicKey)
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

    /// ES256 over `data` (SHA-256, then ECDSA). A key in memory cannot fail; a token key throws
    /// ``CertrotError/Code/signerUnavailable`` when the token cannot sign.
    public func signature(for data: some DataProtocol) throws(CertrotError) -> P256.Signing.ECDSASignature {
        switch backing {
        case .memory(let key):
            return try! key.signature(for: data)  // P-256 signing in memory cannot fail
        case .external(let signer):
            return try signer.sign(digest: SHA256.hash(data: data))
        }
    }

    /// The key in memory; nil for a token key (whose private half certrot never holds).
    public var memoryKey: P256.Signing.PrivateKey? {
        if case .memory(let key) = backing { return key }
        return nil
    }

    /// Where a token key lives (nil: in memory).
    public var location: String? {
        if case .external(let signer) = backing { return signer.location }
        return nil
    }

    /// Why a token key cannot sign now; nil when it can, and always for a key in memory.
    public var problem: String? {
        if case .external(let signer) = backing { return signer.problem }
        return nil
    }

    /// For a token key that failed: tries a signature now and returns the problem that remains (nil: it signs
    /// again). A key in memory has none.
    public func probe() -> String? {
        guard case .external(let signer) = backing, signer.problem != nil else { return nil }
        do {
            _ = try signer.sign(digest: SHA256.hash(data: Array("certrot readiness probe".utf8)))
            return nil
        } catch {
            return error.message
        }
    }

    /// The PKCS#8 PEM of a key in memory; nil for a token key.
    public var pkcs8PEM: String? { memoryKey?.pemRepresentation }
    public var description: String { "SigningKey(kid: \(kid)\(location.map { ", \($0)" } ?? ""))" }
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

import Crypto
import Foundation
import SwiftASN1
import X509
import _CryptoExtras

/// An issuing CA's key held outside certrot's memory, in a PKCS#11 token (`CertrotPKCS11`), of any kind. A P-256
/// token key is a ``SigningKey`` (``ExternalSigner``) instead, as bundle keys are.
public protocol ExternalIssuerSigner: Sendable {
    /// Where the key lives, for errors and logs (an RFC 7512 URI, without its PIN).
    var location: String { get }
    var kind: IssuerKey.Kind { get }
    var certificatePublicKey: Certificate.PublicKey { get }
    /// The signature a certificate or CRL carries for `bytes`, with the algorithm ``kind`` calls for, verified
    /// under the public key; throws ``CertrotError/Code/signerUnavailable`` when the token cannot sign now.
    func signCertificate(_ bytes: [UInt8]) throws(CertrotError) -> [UInt8]
    /// Why the key cannot sign now, or nil when it can (as far as the last attempt showed).
    var problem: String? { get }
}

/// A key whose failures make the daemon not ready (`/readyz`, `certrot_signing_keys_unavailable`).
public protocol SignerHealth: Sendable {
    /// Why the key cannot sign now; nil when it can.
    var problem: String? { get }
    /// For a key that failed: tries a signature now and returns the problem that remains (nil: it signs again).
    func probe() -> String?
}

extension SigningKey: SignerHealth {}

/// The private key of an issuing CA (`issuers[].key`): ECDSA P-256 (in memory or in a PKCS#11 token), ECDSA P-384,
/// or RSA of 2048, 3072 or 4096 bits. Certificates and CRLs are signed with the algorithm the key calls for:
/// ecdsa-with-SHA256, ecdsa-with-SHA384, sha256WithRSAEncryption (PKCS#1 v1.5: what OpenSSL, mosquitto's TLS and
/// the common private CAs sign and verify by default; RSA-PSS is not offered). The devices' own keys stay the
/// modem's P-256 whatever the issuer's kind.
public struct IssuerKey: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case p256 = "p256"
        case p384 = "p384"
        case rsa2048 = "rsa2048"
        case rsa3072 = "rsa3072"
        case rsa4096 = "rsa4096"

        /// How people name it: `P-256`, `RSA-3072`.
        public var name: String {
            switch self {
            case .p256: "P-256"
            case .p384: "P-384"
            case .rsa2048: "RSA-2048"
            case .rsa3072: "RSA-3072"
            case .rsa4096: "RSA-4096"
            }
        }
    }

    enum Backing: Sendable {
        case p256(SigningKey)
        case p384(P384.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey)
        /// A P-384 or RSA key in a token.
        case external(any ExternalIssuerSigner)
    }

    let backing: Backing
    public let kind: Kind

    public init(_ key: SigningKey) {
        backing = .p256(key)
        kind = .p256
    }

    public init(_ key: P384.Signing.PrivateKey) {
        backing = .p384(key)
        kind = .p384
    }

    public init(_ key: _RSA.Signing.PrivateKey) throws(CertrotError) {
        switch key.keySizeInBits {
        case 2048: kind = .rsa2048
        case 3072: kind = .rsa3072
        case 4096: kind = .rsa4096
        default:
            throw CertrotError(
                .invalidKey, "an RSA issuer key must have 2048, 3072 or 4096 bits (this one: \(key.keySizeInBits))")
        }
        backing = .rsa(key)
    }

    /// A P-384 or RSA key in a token (`KeyFile.loadIssuerKey` gives a P-256 token key as a ``SigningKey``, which
    /// signs through the same token with the bundle keys' code).
    public init(external signer: any ExternalIssuerSigner) {
        backing = .external(signer)
        kind = signer.kind
    }

    /// A new key of `kind`, in memory.
    public static func generate(_ kind: Kind) -> IssuerKey {
        switch kind {
        case .p256: return IssuerKey(SigningKey.generate())
        case .p384: return IssuerKey(P384.Signing.PrivateKey())
        case .rsa2048, .rsa3072, .rsa4096:
            let size: _RSA.Signing.KeySize =
                kind == .rsa2048 ? .bits2048 : kind == .rsa3072 ? .bits3072 : .bits4096
            return try! IssuerKey(_RSA.Signing.PrivateKey(keySize: size))  // a supported size cannot fail
        }
    }

    /// A PEM private key: PKCS#8 (`PRIVATE KEY`) of any kind, SEC 1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    public init(pem: String) throws(CertrotError) {
        if let key = try? SigningKey(pem: pem) {
            self.init(key)
        } else if let key = try? P384.Signing.PrivateKey(pemRepresentation: pem) {
            self.init(key)
        } else if let key = try? _RSA.Signing.PrivateKey(unsafePEMRepresentation: pem) {
            // unsafe: sizes below 2048 parse, so that the refusal names the size.
            try self.init(key)
        } else {
            throw CertrotError(
                .invalidKey,
                "the issuer key is not a P-256, P-384 or RSA (2048, 3072, 4096 bits) private key in PEM form")
        }
    }

    /// The P-256 key (in memory or in a token) when the issuer's key is one.
    public var signingKey: SigningKey? {
        if case .p256(let key) = backing { return key }
        return nil
    }

    /// The key as swift-certificates signs with it.
    public var certificateKey: Certificate.PrivateKey {
        switch backing {
        case .p256(let key): key.certificateKey
        case .p384(let key): Certificate.PrivateKey(key)
        case .rsa(let key): Certificate.PrivateKey(key)
        case .external(let signer): Certificate.PrivateKey(ExternalIssuerCertificateKey(signer: signer))
        }
    }

    public var publicKey: Certificate.PublicKey { certificateKey.publicKey }

    /// What the certificates and CRLs this key signs carry.
    public var signatureAlgorithm: Certificate.SignatureAlgorithm { Self.signatureAlgorithm(kind) }

    static func signatureAlgorithm(_ kind: Kind) -> Certificate.SignatureAlgorithm {
        switch kind {
        case .p256: .ecdsaWithSHA256
        case .p384: .ecdsaWithSHA384
        case .rsa2048, .rsa3072, .rsa4096: .sha256WithRSAEncryption
        }
    }

    /// The DER AlgorithmIdentifier of ``signatureAlgorithm`` (RFC 5758 §3.2: no parameters for ECDSA; RFC 4055:
    /// NULL parameters for sha256WithRSAEncryption).
    public var algorithmIdentifierDER: [UInt8] { Self.algorithmIdentifierDER(signatureAlgorithm)! }

    static func algorithmIdentifierDER(_ algorithm: Certificate.SignatureAlgorithm) -> [UInt8]? {
        switch algorithm {
        case .ecdsaWithSHA256: [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        case .ecdsaWithSHA384: [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03]
        case .sha256WithRSAEncryption:
            [0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B, 0x05, 0x00]
        default: nil
        }
    }

    /// The algorithm an AlgorithmIdentifier's DER names, among those certrot signs with.
    static func signatureAlgorithm(der: [UInt8]) -> Certificate.SignatureAlgorithm? {
        [.ecdsaWithSHA256, .ecdsaWithSHA384, .sha256WithRSAEncryption].first { algorithmIdentifierDER($0) == der }
    }

    /// The signature over `bytes`, as a BIT STRING carries it (DER ECDSA-Sig-Value, or the RSA signature).
    public func signature(for bytes: [UInt8]) throws -> [UInt8] {
        switch backing {
        case .p256(let key): return Array(try key.signature(for: bytes).derRepresentation)
        case .external(let signer): return try signer.signCertificate(bytes)
        case .p384, .rsa:
            return try certificateKey.sign(bytes: bytes, signatureAlgorithm: signatureAlgorithm).rawRepresentation
        }
    }

    /// The PKCS#8 PEM of a key in memory; nil for a token key.
    public var pkcs8PEM: String? {
        switch backing {
        case .p256(let key): key.pkcs8PEM
        case .p384(let key): key.pemRepresentation
        case .rsa(let key): key.pkcs8PEMRepresentation
        case .external: nil
        }
    }

    /// Where a token key lives (nil: in memory).
    public var location: String? {
        if case .external(let signer) = backing { return signer.location }
        return signingKey?.location
    }

    public var description: String { "IssuerKey(\(kind.name)\(location.map { ", \($0)" } ?? ""))" }
}

extension IssuerKey: SignerHealth {
    public var problem: String? {
        switch backing {
        case .p256(let key): key.problem
        case .external(let signer): signer.problem
        case .p384, .rsa: nil
        }
    }

    public func probe() -> String? {
        switch backing {
        case .p256(let key): return key.probe()
        case .external(let signer):
            guard signer.problem != nil else { return nil }
            do {
                _ = try signer.signCertificate(Array("certrot readiness probe".utf8))
                return nil
            } catch {
                return error.message
            }
        case .p384, .rsa: return nil
        }
    }
}

/// A token key of any kind for swift-certificates (self-signed CAs made in a token); never serialisable.
struct ExternalIssuerCertificateKey: CustomPrivateKey {
    let signer: any ExternalIssuerSigner

    static let defaultPEMDiscriminator = "PRIVATE KEY"

    var publicKey: Certificate.PublicKey { signer.certificatePublicKey }
    var defaultSignatureAlgorithm: Certificate.SignatureAlgorithm { IssuerKey.signatureAlgorithm(signer.kind) }
    var supportedSignatureAlgorithms: [Certificate.SignatureAlgorithm] { [defaultSignatureAlgorithm] }

    func signSynchronously(
        bytes: some DataProtocol, signatureAlgorithm: Certificate.SignatureAlgorithm
    ) throws -> Certificate.Signature {
        guard signatureAlgorithm == defaultSignatureAlgorithm else {
            throw CertrotError(
                .invalidKey, "a \(signer.kind.name) token key signs with \(defaultSignatureAlgorithm) only")
        }
        return try Certificate.Signature(
            signatureAlgorithm: signatureAlgorithm,
            signatureBytes: ASN1BitString(bytes: ArraySlice(try signer.signCertificate(Array(bytes)))))
    }

    func signAsynchronously(
        bytes: some DataProtocol & Sendable, signatureAlgorithm: Certificate.SignatureAlgorithm
    ) async throws -> Certificate.Signature {
        try signSynchronously(bytes: bytes, signatureAlgorithm: signatureAlgorithm)
    }

    func serialize(into coder: inout DER.Serializer) throws {
        throw CertrotError(.invalidKey, "a key in a PKCS#11 token cannot be exported (\(signer.location))")
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.signer.location == rhs.signer.location }
    func hash(into hasher: inout Hasher) { hasher.combine(signer.location) }
}

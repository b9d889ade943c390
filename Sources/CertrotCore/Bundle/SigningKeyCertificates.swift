import Foundation
import Crypto
import SwiftASN1
import X509

extension SigningKey {
    /// The key as swift-certificates signs with it: the P-256 key itself when in memory, otherwise a
    /// `CustomPrivateKey` whose every signature is made by the token (certificates, self-signed CAs).
    public var certificateKey: Certificate.PrivateKey {
        switch backing {
        case .memory(let key): Certificate.PrivateKey(key)
        case .external: Certificate.PrivateKey(ExternalCertificateKey(key: self))
        }
    }
}

/// A token key for swift-certificates: ECDSA with SHA-256 only, and never serialisable (there is nothing to write).
struct ExternalCertificateKey: CustomPrivateKey {
    let key: SigningKey

    static let defaultPEMDiscriminator = "PRIVATE KEY"

    var publicKey: Certificate.PublicKey { Certificate.PublicKey(key.publicKey.publicKey) }
    var defaultSignatureAlgorithm: Certificate.SignatureAlgorithm { .ecdsaWithSHA256 }
    var supportedSignatureAlgorithms: [Certificate.SignatureAlgorithm] { [.ecdsaWithSHA256] }

    func signSynchronously(
        bytes: some DataProtocol, signatureAlgorithm: Certificate.SignatureAlgorithm
    ) throws -> Certificate.Signature {
        guard signatureAlgorithm == .ecdsaWithSHA256 else {
            throw CertrotError(.invalidKey, "a token key signs with ecdsa-with-SHA256 only")
        }
        let signature = try key.signature(for: bytes)
        return try Certificate.Signature(
            signatureAlgorithm: .ecdsaWithSHA256,
            signatureBytes: ASN1BitString(bytes: ArraySlice(signature.derRepresentation)))
    }

    func signAsynchronously(
        bytes: some DataProtocol & Sendable, signatureAlgorithm: Certificate.SignatureAlgorithm
    ) async throws -> Certificate.Signature {
        try signSynchronously(bytes: bytes, signatureAlgorithm: signatureAlgorithm)
    }

    func serialize(into coder: inout DER.Serializer) throws {
        throw CertrotError(.invalidKey, "a key in a PKCS#11 token cannot be exported (\(key.location ?? key.kid))")
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.key.kid == rhs.key.kid }
    func hash(into hasher: inout Hasher) { hasher.combine(key.kid) }
}

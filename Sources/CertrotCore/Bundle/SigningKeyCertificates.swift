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
        case .external:
            Certificate.PrivateKey(ExternalIssuerCertificateKey(signer: ExternalSigningKeyIssuer(key: self)))
        }
    }
}

/// A P-256 token key as an issuer's signer: ecdsa-with-SHA256 through the token, never serialisable.
struct ExternalSigningKeyIssuer: ExternalIssuerSigner {
    let key: SigningKey

    var location: String { key.location ?? key.kid }
    var kind: IssuerKey.Kind { .p256 }
    var certificatePublicKey: Certificate.PublicKey { Certificate.PublicKey(key.publicKey.publicKey) }
    var problem: String? { key.problem }

    func signCertificate(_ bytes: [UInt8]) throws(CertrotError) -> [UInt8] {
        Array(try key.signature(for: bytes).derRepresentation)
    }
}

import CertrotCore
import Crypto
import Foundation
import SwiftASN1
import X509

/// Certificates made at run time for tests and the demo: CA roots and leaves, P-256.
public enum CertificateFactory {
    public struct Issued: Sendable {
        public var certificate: Certificate
        public var key: P256.Signing.PrivateKey
        public var pem: String { (try? certificate.serializeAsPEM().pemString).map { $0 + "\n" } ?? "" }
        /// The private key, PKCS#8 PEM (test material only).
        public var keyPEM: String { key.pemRepresentation + "\n" }
    }

    /// A self-signed CA valid from an hour ago for `days` days (or from `notBefore` to `notAfter`).
    public static func rootCA(
        commonName: String, days: Int = 365, notBefore: Date? = nil, notAfter: Date? = nil, isCA: Bool = true
    ) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("certrot test")
            CommonName(commonName)
        }
        let start = notBefore ?? Date().addingTimeInterval(-3600)
        let end = notAfter ?? Date().addingTimeInterval(Double(days) * 86400)
        let extensions = try Certificate.Extensions {
            Critical(
                isCA
                    ? BasicConstraints.isCertificateAuthority(maxPathLength: nil)
                    : BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: !isCA, keyCertSign: isCA, cRLSign: isCA))
            SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: start, notValidAfter: end, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(key))
        return Issued(certificate: certificate, key: key)
    }

    /// An intermediate CA named `commonName`, issued by the CA `issuer`, valid from an hour ago for `days` days.
    public static func intermediate(commonName: String, issuer: Issued, days: Int = 365) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("certrot test")
            CommonName(commonName)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-3600),
            notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
            issuer: issuer.certificate.subject, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(issuer.key))
        return Issued(certificate: certificate, key: key)
    }

    /// A self-signed certificate with no BasicConstraints extension at all (neither CA nor end entity), for tests.
    public static func selfSignedWithoutBasicConstraints(commonName: String, days: Int = 365) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let extensions = try Certificate.Extensions {
            SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-3600),
            notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(key))
        return Issued(certificate: certificate, key: key)
    }

    /// A certificate for `dnsName` (and 127.0.0.1) issued by `issuer`, for TLS servers and clients.
    public static func leaf(dnsName: String, issuer: Issued, days: Int = 90, loopbackIP: Bool = true) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(dnsName) }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectAlternativeNames(
                [.dnsName(dnsName)] + (loopbackIP ? [.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))] : []))
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-3600),
            notValidAfter: Date().addingTimeInterval(Double(days) * 86400),
            issuer: issuer.certificate.subject, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(issuer.key))
        return Issued(certificate: certificate, key: key)
    }

    /// A chain file's text: the given certificates' PEM, concatenated.
    public static func chain(_ issued: [Issued]) -> String {
        issued.map(\.pem).joined()
    }
}

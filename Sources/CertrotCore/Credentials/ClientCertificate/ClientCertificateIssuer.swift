import Crypto
import Foundation
import SwiftASN1
import X509

/// Issues device client certificates from keys the modems generated (docs/protocol.md, client certificates): the
/// subject from certrot's policy (never the CSR's), EKU clientAuth, key usage digitalSignature (critical),
/// basicConstraints CA:false (critical), subject and authority key identifiers, a random positive 16-byte serial,
/// valid from five minutes ago until the policy's validity or the issuer's own end, whichever comes first; signed
/// with the algorithm the issuer's key calls for (``IssuerKey``).
public struct ClientCertificateIssuer: Sendable {
    public var certificate: Certificate
    public var key: IssuerKey
    /// Seconds a certificate is valid for (at most until the issuer's notAfter).
    public var validity: Int64

    /// Encodes each certificate (built once per issuer).
    let writer: ClientCertificateWriter

    /// What was issued: the certificate's DER and the PEM a device writes as type 1 (leaf, in PEM normal form).
    public struct Issued: Sendable {
        public var der: [UInt8]
        /// Lowercase hex of the serial's bytes.
        public var serial: String
        public var pem: String
        public var notBefore: Date
        public var notAfter: Date
        public var sha256: String { Hex.sha256(Array(pem.utf8)) }
        /// The certificate, parsed (for inspection; issuing does not need it).
        public var certificate: Certificate { try! Certificate(derEncoded: der) }  // certrot wrote these bytes
    }

    /// Checks that `certificate` is a CA that may sign certificates and that `key` is its key.
    public init(certificate: Certificate, key: IssuerKey, validity: Int64) throws(CertrotError) {
        guard key.publicKey == certificate.publicKey else {
            throw CertrotError(.invalidKey, "the issuer's key is not the key of its certificate")
        }
        let constraints = try? certificate.extensions.basicConstraints
        guard case .isCertificateAuthority = constraints else {
            throw CertrotError(.invalidConfig, "the issuer's certificate is not a CA (basicConstraints)")
        }
        if let usage = try? certificate.extensions.keyUsage, !usage.keyCertSign {
            throw CertrotError(.invalidConfig, "the issuer's certificate may not sign certificates (keyUsage)")
        }
        guard validity > 0 else { throw CertrotError(.invalidConfig, "a client certificate's validity must be > 0") }
        do {
            writer = try ClientCertificateWriter(issuer: certificate, algorithm: key.algorithmIdentifierDER)
        } catch {
            throw CertrotError(.invalidConfig, "the issuer's certificate does not encode: \(error)")
        }
        self.certificate = certificate
        self.key = key
        self.validity = validity
    }

    /// An issuer with a P-256 key, in memory or in a token.
    public init(certificate: Certificate, key: SigningKey, validity: Int64) throws(CertrotError) {
        try self.init(certificate: certificate, key: IssuerKey(key), validity: validity)
    }

    /// An issuer whose key is in memory (tests, the benchmark, trials).
    public init(certificate: Certificate, key: P256.Signing.PrivateKey, validity: Int64) throws(CertrotError) {
        try self.init(certificate: certificate, key: SigningKey(privateKey: key), validity: validity)
    }

    /// A self-signed issuing CA for trials (`certrot issuer init`): basicConstraints CA with path length 0 and key
    /// usage keyCertSign and cRLSign (both critical), valid from five minutes before `now` for `days`.
    public static func selfSignedCA(key: SigningKey, commonName: String, days: Int, now: Date) throws -> Certificate {
        try selfSignedCA(key: IssuerKey(key), commonName: commonName, days: days, now: now)
    }

    /// The same, for an issuing CA of any kind.
    public static func selfSignedCA(key: IssuerKey, commonName: String, days: Int, now: Date) throws -> Certificate {
        let subject = try DistinguishedName { CommonName(commonName) }
        let publicKey = key.publicKey
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(days) * 86400),
            issuer: subject, subject: subject, signatureAlgorithm: key.signatureAlgorithm,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            }, issuerPrivateKey: key.certificateKey)
    }

    /// A certificate for `publicKey`, named `commonName`, issued at `now`.
    public func issue(for publicKey: P256.Signing.PublicKey, commonName: String, now: Date) throws -> Issued {
        try issue(for: publicKey, commonName: commonName, now: now, serial: Self.newSerial())
    }

    /// A random positive serial of exactly 16 bytes in DER.
    static func newSerial() -> [UInt8] {
        // Two draws of the system's generator (one getrandom each), not sixteen.
        var generator = SystemRandomNumberGenerator()
        let (high, low): (UInt64, UInt64) = (generator.next(), generator.next())
        var serial = (0..<8).map { UInt8(truncatingIfNeeded: high >> ($0 * 8)) }
        serial += (0..<8).map { UInt8(truncatingIfNeeded: low >> ($0 * 8)) }
        serial[0] = serial[0] & 0x7F | 0x40
        return serial
    }

    /// From five minutes before `now` until the policy's validity or the issuer's own end, whichever comes first.
    func window(now: Date) -> (notBefore: Date, notAfter: Date) {
        (now.addingTimeInterval(-300), min(now.addingTimeInterval(Double(validity)), certificate.notValidAfter))
    }

    /// The same, with the serial given (the comparison with swift-certificates' encoding, `ClientCertificateWriterTests`).
    package func issue(
        for publicKey: P256.Signing.PublicKey, commonName: String, now: Date, serial: [UInt8]
    ) throws -> Issued {
        let (notBefore, notAfter) = window(now: now)
        let tbs = writer.tbs(
            serial: serial, notBefore: notBefore, notAfter: notAfter, commonName: commonName, publicKey: publicKey)
        let der = writer.certificate(tbs: tbs, signature: try key.signature(for: tbs))
        return Issued(
            der: der, serial: Hex.encode(serial), pem: ClientCertificateWriter.pem(der),
            notBefore: Date(timeIntervalSince1970: notBefore.timeIntervalSince1970.rounded()),
            notAfter: Date(timeIntervalSince1970: notAfter.timeIntervalSince1970.rounded()))
    }

    /// The certificate as swift-certificates builds and encodes it (the encoding before #35 §2): the reference the
    /// writer's bytes are compared with, and the issuing figure the benchmark compares with.
    package func issueThroughSwiftCertificates(
        for publicKey: P256.Signing.PublicKey, commonName: String, now: Date, serial: [UInt8]
    ) throws -> Issued {
        let (notBefore, notAfter) = window(now: now)
        let subject = try DistinguishedName { CommonName(commonName) }
        let issuerKeyID = ClientCertificateWriter.keyIdentifier(of: certificate)
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.clientAuth])
            SubjectKeyIdentifier(hash: Certificate.PublicKey(publicKey))
            AuthorityKeyIdentifier(keyIdentifier: issuerKeyID)
        }
        let issued = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(bytes: serial),
            publicKey: Certificate.PublicKey(publicKey), notValidBefore: notBefore, notValidAfter: notAfter,
            issuer: certificate.subject, subject: subject, signatureAlgorithm: key.signatureAlgorithm,
            extensions: extensions, issuerPrivateKey: key.certificateKey)
        let pem = try PEM.normalizeChain(try issued.serializeAsPEM().pemString).pem
        var der = DER.Serializer()
        try der.serialize(issued)
        return Issued(
            der: der.serializedBytes, serial: Hex.encode(serial), pem: pem, notBefore: issued.notValidBefore,
            notAfter: issued.notValidAfter)
    }
}

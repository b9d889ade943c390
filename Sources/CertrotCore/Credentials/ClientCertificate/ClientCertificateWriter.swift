import Crypto
import Foundation
import SwiftASN1
import X509

/// Writes a device client certificate's DER directly (#35 §2: issuing was ~150 µs a certificate, of which the
/// P-256 signature is ~19 µs; building and encoding through swift-certificates was the rest). What does not change
/// between two certificates of one issuer — the version, the algorithm, the issuer's name, the constant extensions
/// and the authority key identifier — is encoded once, by swift-certificates itself; each certificate adds its
/// serial, validity, subject, public key and subject key identifier. The bytes are those `Certificate(…)` of
/// swift-certificates makes for the same inputs (`ClientCertificateWriterTests` compares them for every issuer
/// kind, short and long names, and times on both sides of 2050).
struct ClientCertificateWriter: Sendable {
    /// `[0] EXPLICIT INTEGER 2`.
    private static let version: [UInt8] = [0xA0, 0x03, 0x02, 0x01, 0x02]
    /// SubjectPublicKeyInfo of a P-256 key up to the point: SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING.
    private static let p256KeyPrefix: [UInt8] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48,
        0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ]
    /// Extension { subjectKeyIdentifier, OCTET STRING { OCTET STRING (20 bytes) } } up to the identifier.
    private static let subjectKeyIDPrefix: [UInt8] = [
        0x30, 0x1D, 0x06, 0x03, 0x55, 0x1D, 0x0E, 0x04, 0x16, 0x04, 0x14,
    ]

    /// The signature algorithm (in the TBS and after it).
    let algorithm: [UInt8]
    /// The issuer's name (the CA's subject).
    let issuerName: [UInt8]
    /// basicConstraints, keyUsage and extKeyUsage, as encoded extensions (before the subject key identifier).
    let leadingExtensions: [UInt8]
    /// authorityKeyIdentifier, as an encoded extension (after the subject key identifier).
    let authorityKeyID: [UInt8]

    init(issuer certificate: Certificate, algorithm: [UInt8]) throws {
        self.algorithm = algorithm
        var name = DER.Serializer()
        try name.serialize(certificate.subject)
        issuerName = name.serializedBytes
        let keyID = Self.keyIdentifier(of: certificate)
        let leading = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.clientAuth])
        }
        var encoded = DER.Serializer()
        for item in leading { try encoded.serialize(item) }
        leadingExtensions = encoded.serializedBytes
        var authority = DER.Serializer()
        try authority.serialize(Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: keyID), critical: false))
        authorityKeyID = authority.serializedBytes
    }

    /// What an issued certificate's authority key identifier names: the CA's own subject key identifier, or the
    /// hash of its key when it has none.
    static func keyIdentifier(of certificate: Certificate) -> ArraySlice<UInt8> {
        (try? certificate.extensions.subjectKeyIdentifier)?.keyIdentifier
            ?? SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier
    }

    /// The TBSCertificate's DER.
    func tbs(
        serial: [UInt8], notBefore: Date, notAfter: Date, commonName: String, publicKey: P256.Signing.PublicKey
    ) -> [UInt8] {
        let point = Array(publicKey.x963Representation)
        var validity: [UInt8] = []
        Self.appendTime(notBefore, to: &validity)
        Self.appendTime(notAfter, to: &validity)
        // Name: SEQUENCE { SET { SEQUENCE { id-at-commonName, UTF8String } } }
        let attribute = [0x06, 0x03, 0x55, 0x04, 0x03] + Self.tlv(0x0C, Array(commonName.utf8))
        let subject = Self.tlv(0x30, Self.tlv(0x31, Self.tlv(0x30, attribute)))
        var extensions = leadingExtensions
        extensions += Self.subjectKeyIDPrefix
        extensions += Insecure.SHA1.hash(data: point)
        extensions += authorityKeyID

        var body: [UInt8] = []
        body.reserveCapacity(300 + issuerName.count + subject.count)
        body += Self.version
        Self.append(0x02, serial, to: &body)
        body += algorithm
        body += issuerName
        Self.append(0x30, validity, to: &body)
        body += subject
        body += Self.p256KeyPrefix
        body += point
        Self.append(0xA3, Self.tlv(0x30, extensions), to: &body)
        return Self.tlv(0x30, body)
    }

    /// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }.
    func certificate(tbs: [UInt8], signature: [UInt8]) -> [UInt8] {
        Self.tlv(0x30, tbs + algorithm + Self.tlv(0x03, [0x00] + signature))
    }

    private static let base64 = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let pemHeader = Array("-----BEGIN CERTIFICATE-----\n".utf8)
    private static let pemFooter = Array("-----END CERTIFICATE-----\n".utf8)

    /// The certificate in PEM normal form (``PEM/encode(_:)``: 64 base64 characters a line, `\n` endings), written
    /// in one pass.
    static func pem(_ der: [UInt8]) -> String {
        var out = pemHeader
        out.reserveCapacity(pemHeader.count + pemFooter.count + (der.count + 2) / 3 * 4 * 65 / 64 + 2)
        var column = 0
        func emit(_ value: UInt32) { put(base64[Int(value & 63)]) }
        func put(_ character: UInt8) {
            out.append(character)
            column += 1
            if column == 64 {
                out.append(0x0A)
                column = 0
            }
        }
        var index = 0
        while index + 3 <= der.count {
            let n = UInt32(der[index]) << 16 | UInt32(der[index + 1]) << 8 | UInt32(der[index + 2])
            emit(n >> 18)
            emit(n >> 12)
            emit(n >> 6)
            emit(n)
            index += 3
        }
        let rest = der.count - index
        if rest > 0 {
            let n = UInt32(der[index]) << 16 | (rest == 2 ? UInt32(der[index + 1]) << 8 : 0)
            emit(n >> 18)
            emit(n >> 12)
            if rest == 2 { emit(n >> 6) } else { put(0x3D) }  // =
            put(0x3D)
        }
        if column != 0 { out.append(0x0A) }
        out += pemFooter
        return String(decoding: out, as: UTF8.self)
    }

    /// A TLV with a definite DER length, on its own.
    static func tlv(_ tag: UInt8, _ value: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(value.count + 5)
        append(tag, value, to: &out)
        return out
    }

    /// A TLV with a definite DER length, after what `out` holds.
    static func append(_ tag: UInt8, _ value: [UInt8], to out: inout [UInt8]) {
        out.append(tag)
        let count = value.count
        if count < 0x80 {
            out.append(UInt8(count))
        } else if count <= 0xFF {
            out += [0x81, UInt8(count)]
        } else if count <= 0xFFFF {
            out += [0x82, UInt8(count >> 8), UInt8(count & 0xFF)]
        } else {
            out += [0x83, UInt8(count >> 16), UInt8((count >> 8) & 0xFF), UInt8(count & 0xFF)]
        }
        out += value
    }

    /// UTCTime for 1950 through 2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5), at the nearest second, as
    /// swift-certificates encodes a `Date`. (A CRL's times are truncated instead, `RevocationList`: a thisUpdate
    /// rounded up would be in the future for up to half a second, and OpenSSL refuses such a CRL.)
    static func appendTime(_ date: Date, to out: inout [UInt8]) {
        let timestamp = Int64(date.timeIntervalSince1970.rounded())
        let days = timestamp >= 0 ? timestamp / 86400 : (timestamp - 86399) / 86400
        let secondsOfDay = Int(timestamp - days * 86400)
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yearOfEra + era * 400 + (month <= 2 ? 1 : 0))
        var digits: [UInt8] = []
        func two(_ value: Int) {
            digits.append(0x30 + UInt8(value / 10))
            digits.append(0x30 + UInt8(value % 10))
        }
        let utc = (1950..<2050).contains(year)
        if utc {
            two(year % 100)
        } else {
            two(year / 100)
            two(year % 100)
        }
        two(month)
        two(day)
        two(secondsOfDay / 3600)
        two(secondsOfDay / 60 % 60)
        two(secondsOfDay % 60)
        digits.append(0x5A)  // Z
        append(utc ? 0x17 : 0x18, digits, to: &out)
    }
}

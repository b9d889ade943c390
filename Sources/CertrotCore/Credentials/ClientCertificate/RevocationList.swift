import Crypto
import Foundation
import SwiftASN1
import X509

/// An X.509 v2 certificate revocation list (RFC 5280 §5), signed by the issuing CA: what mosquitto's `crlfile`
/// reads. Entries carry the reason `superseded` (a device moved to its new identity); the list carries the
/// authority key identifier and a CRL number that grows with every list the issuer signs.
public enum RevocationList {
    public struct Entry: Sendable, Equatable {
        /// The certificate's serial, big-endian bytes.
        public var serial: [UInt8]
        public var revokedAt: Date

        public init(serial: [UInt8], revokedAt: Date) {
            self.serial = serial
            self.revokedAt = revokedAt
        }
    }

    /// CRLReason superseded (RFC 5280 §5.3.1).
    static let superseded: UInt8 = 4

    /// The signed CRL, PEM (`-----BEGIN X509 CRL-----`).
    public static func make(
        issuer: Certificate, key: P256.Signing.PrivateKey, entries: [Entry], number: Int64, thisUpdate: Date,
        nextUpdate: Date
    ) throws -> String {
        let algorithm: [UInt8] = [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)  // v2
            coder.serializeRawBytes(algorithm)
            try coder.serialize(issuer.subject)
            try serializeTime(thisUpdate, into: &coder)
            try serializeTime(nextUpdate, into: &coder)
            if !entries.isEmpty {
                try coder.appendConstructedNode(identifier: .sequence) { list in
                    for entry in entries.sorted(by: { $0.serial.lexicographicallyPrecedes($1.serial) }) {
                        try list.appendConstructedNode(identifier: .sequence) { item in
                            try item.serialize(ArraySlice(entry.serial))
                            try serializeTime(entry.revokedAt, into: &item)
                            try item.appendConstructedNode(identifier: .sequence) { extensions in
                                try extensions.serialize(
                                    Certificate.Extension(
                                        oid: [2, 5, 29, 21], critical: false, value: [0x0A, 0x01, superseded][...]))
                            }
                        }
                    }
                }
            }
            let keyID =
                (try? issuer.extensions.subjectKeyIdentifier)?.keyIdentifier
                ?? SubjectKeyIdentifier(hash: issuer.publicKey).keyIdentifier
            try coder.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) {
                explicit in
                try explicit.appendConstructedNode(identifier: .sequence) { extensions in
                    try extensions.serialize(
                        Certificate.Extension(AuthorityKeyIdentifier(keyIdentifier: keyID), critical: false))
                    var crlNumber = DER.Serializer()
                    try crlNumber.serialize(number)
                    try extensions.serialize(
                        Certificate.Extension(
                            oid: [2, 5, 29, 20], critical: false, value: crlNumber.serializedBytes[...]))
                }
            }
        }
        let tbsBytes = tbs.serializedBytes
        let signature = try key.signature(for: tbsBytes).derRepresentation
        var list = DER.Serializer()
        try list.appendConstructedNode(identifier: .sequence) { coder in
            coder.serializeRawBytes(tbsBytes)
            coder.serializeRawBytes(algorithm)
            try coder.serialize(ASN1BitString(bytes: ArraySlice(signature)))
        }
        return PEMDocument(type: "X509 CRL", derBytes: list.serializedBytes).pemString + "\n"
    }

    /// UTCTime through 2049, GeneralizedTime after (RFC 5280 §5.1.2.4).
    private static func serializeTime(_ date: Date, into coder: inout DER.Serializer) throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let (year, month, day, hour, minute, second) = (c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
        if year < 2050 {
            try coder.serialize(
                try UTCTime(year: year, month: month, day: day, hours: hour, minutes: minute, seconds: second))
        } else {
            try coder.serialize(
                try GeneralizedTime(
                    year: year, month: month, day: day, hours: hour, minutes: minute, seconds: second,
                    fractionalSeconds: 0))
        }
    }
}

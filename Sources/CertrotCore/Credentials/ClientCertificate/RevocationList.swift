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

    /// The signed CRL of a P-256 issuer (in memory or in a token).
    public static func make(
        issuer: Certificate, key: SigningKey, entries: [Entry], number: Int64, thisUpdate: Date, nextUpdate: Date
    ) throws -> String {
        try make(
            issuer: issuer, key: IssuerKey(key), entries: entries, number: number, thisUpdate: thisUpdate,
            nextUpdate: nextUpdate)
    }

    /// The signed CRL, PEM (`-----BEGIN X509 CRL-----`), with the algorithm the issuer's key calls for.
    public static func make(
        issuer: Certificate, key: IssuerKey, entries: [Entry], number: Int64, thisUpdate: Date,
        nextUpdate: Date
    ) throws -> String {
        let algorithm = key.algorithmIdentifierDER
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
            let keyID = ClientCertificateWriter.keyIdentifier(of: issuer)
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
        let signature = try key.signature(for: tbsBytes)
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

extension RevocationList {
    /// What a CRL says, as `certrot cert inspect` shows it.
    public struct Parsed: Sendable {
        public var issuer: DistinguishedName
        public var thisUpdate: Date
        public var nextUpdate: Date?
        /// Revoked serials, lowercase hex.
        public var serials: [String]
        /// The DER of the signed part, the signature over it, and its algorithm (nil: one certrot does not sign
        /// with).
        var tbs: [UInt8]
        var signature: [UInt8]
        public var signatureAlgorithm: Certificate.SignatureAlgorithm?

        /// True when the issuer's key signed it, with the algorithm the CRL names (ECDSA P-256 or P-384, RSA).
        public func isSigned(by issuer: Certificate) -> Bool {
            guard let signatureAlgorithm else { return false }
            return issuer.publicKey.isValidSignature(signature, for: tbs, signatureAlgorithm: signatureAlgorithm)
        }
    }

    /// Reads a PEM CRL (v2; signed with ecdsa-with-SHA256 or -SHA384, or sha256WithRSAEncryption).
    public static func parse(_ pem: String) throws(CertrotError) -> Parsed {
        do {
            let document = try PEMDocument(pemString: pem)
            guard document.discriminator == "X509 CRL" else {
                throw CertrotError(.invalidPEM, "not an X509 CRL (\(document.discriminator))")
            }
            let root = try DER.parse(document.derBytes)
            guard case .constructed(let top) = root.content, case let parts = Array(top), parts.count == 3,
                case .constructed(let fields) = parts[0].content
            else { throw CertrotError(.invalidPEM, "a CRL is SEQUENCE {tbsCertList, signatureAlgorithm, signature}") }
            var nodes = Array(fields)[...]
            if nodes.first?.identifier == .integer { nodes = nodes.dropFirst() }  // version
            guard nodes.count >= 3 else { throw CertrotError(.invalidPEM, "the CRL's tbsCertList is too short") }
            nodes = nodes.dropFirst()  // signature algorithm
            let issuer = try DistinguishedName(derEncoded: nodes.removeFirst())
            let thisUpdate = try time(nodes.removeFirst())
            var nextUpdate: Date?
            if let node = nodes.first, node.identifier == .utcTime || node.identifier == .generalizedTime {
                nextUpdate = try time(nodes.removeFirst())
            }
            var serials: [String] = []
            if let node = nodes.first, node.identifier == .sequence, case .constructed(let entries) = node.content {
                for entry in entries {
                    guard case .constructed(let items) = entry.content, let first = Array(items).first else { continue }
                    serials.append(Hex.encode(try ArraySlice<UInt8>(derEncoded: first)))
                }
            }
            let signature = try ASN1BitString(derEncoded: parts[2])
            return Parsed(
                issuer: issuer, thisUpdate: thisUpdate, nextUpdate: nextUpdate, serials: serials,
                tbs: Array(parts[0].encodedBytes), signature: Array(signature.bytes),
                signatureAlgorithm: IssuerKey.signatureAlgorithm(der: Array(parts[1].encodedBytes)))
        } catch let error as CertrotError {
            throw error
        } catch {
            throw CertrotError(.invalidPEM, "the CRL does not parse: \(error)")
        }
    }

    private static func time(_ node: ASN1Node) throws -> Date {
        if node.identifier == .utcTime {
            let t = try UTCTime(derEncoded: node)
            return try date(t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
        }
        let t = try GeneralizedTime(derEncoded: node)
        return try date(t.year, t.month, t.day, t.hours, t.minutes, t.seconds)
    }

    private static func date(
        _ year: Int, _ month: Int, _ day: Int, _ hour: Int, _ minute: Int, _ second: Int
    ) throws
        -> Date
    {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard
            let date = calendar.date(
                from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second))
        else { throw CertrotError(.invalidPEM, "a CRL time is not a date") }
        return date
    }
}

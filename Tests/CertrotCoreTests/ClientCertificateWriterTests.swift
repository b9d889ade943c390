import CertrotCore
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

/// The certificate writer (#35 §2) against swift-certificates, which encoded every client certificate before it:
/// for the same serial, times, name and keys the bytes are the same. ECDSA signatures are random, so the signed
/// part is compared, and the whole certificate read back and encoded again by swift-certificates; RSA (PKCS#1
/// v1.5) is deterministic, so there the two whole certificates are compared as they are.
@Suite struct ClientCertificateWriterTests {
    static let names = [
        "nrf-352656100000001",
        "d",
        // Long enough that the name, the TBS and the certificate need a two-byte DER length.
        String(repeating: "x", count: 200),
        "nrf-ünïcode-設備",
    ]

    static let times: [Date] = [
        Date(),  // fractional seconds
        Date(timeIntervalSince1970: 1_767_225_599.5),  // rounds up to a new year
        Date(timeIntervalSince1970: 2_524_607_700),  // 2049-12-31T23:55: notAfter in 2050 (GeneralizedTime)
        Date(timeIntervalSince1970: 946_684_800),  // 2000-01-01
    ]

    @Test(arguments: [IssuerKey.Kind.p256, .p384, .rsa2048])
    func theWriter_encodesWhatSwiftCertificatesEncodes(kind: IssuerKey.Kind) throws {
        let key = IssuerKey.generate(kind)
        let ca = try ClientCertificateIssuer.selfSignedCA(
            key: key, commonName: "Device CA \(kind.name)", days: 36500, now: Date(timeIntervalSince1970: 900_000_000))
        for validity: Int64 in [86400, 30 * 86400, 200 * 365 * 86400] {
            let issuer = try ClientCertificateIssuer(certificate: ca, key: key, validity: validity)
            for name in Self.names {
                for now in Self.times {
                    let device = P256.Signing.PrivateKey().publicKey
                    var serial = (0..<16).map { _ in UInt8.random(in: 0...255) }
                    serial[0] = serial[0] & 0x7F | 0x40
                    let fast = try issuer.issue(for: device, commonName: name, now: now, serial: serial)
                    let reference = try issuer.issueThroughSwiftCertificates(
                        for: device, commonName: name, now: now, serial: serial)
                    let parsed = try Certificate(derEncoded: fast.der)
                    let expected = try Certificate(derEncoded: reference.der)
                    #expect(Array(parsed.tbsCertificateBytes) == Array(expected.tbsCertificateBytes), "\(name) \(now)")
                    // Read back and encoded again by swift-certificates: the same bytes, DER and PEM.
                    var again = DER.Serializer()
                    try again.serialize(parsed)
                    #expect(again.serializedBytes == fast.der)
                    #expect(try PEM.normalizeChain(parsed.serializeAsPEM().pemString).pem == fast.pem)
                    #expect(ca.publicKey.isValidSignature(parsed.signature, for: parsed))
                    #expect(fast.serial == reference.serial)
                    #expect(fast.notBefore == reference.notBefore && fast.notAfter == reference.notAfter)
                    if kind != .p256, kind != .p384 {
                        #expect(fast.der == reference.der && fast.pem == reference.pem)
                    }
                }
            }
        }
    }
}

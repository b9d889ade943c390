import CertrotCore
import CertrotTestSupport
import Crypto
import Foundation
import Testing
import X509

/// Client certificates as certrot issues them, checked field by field and by OpenSSL as a TLS client certificate.
@Suite struct ClientCertificateIssuerTests {
    let ca: CertificateFactory.Issued
    let issuer: ClientCertificateIssuer

    init() throws {
        ca = try CertificateFactory.rootCA(commonName: "Device CA", days: 3650)
        issuer = try ClientCertificateIssuer(certificate: ca.certificate, key: ca.key, validity: 365 * 86400)
    }

    @Test func anIssuedCertificate_hasThePolicysFields() throws {
        let device = P256.Signing.PrivateKey()
        let now = Date()
        let issued = try issuer.issue(for: device.publicKey, commonName: "nrf-352656100123456", now: now)
        let certificate = issued.certificate
        #expect(certificate.subject.description == "CN=nrf-352656100123456")
        #expect(certificate.issuer == ca.certificate.subject)
        #expect(certificate.publicKey == Certificate.PublicKey(device.publicKey))
        #expect(abs(certificate.notValidBefore.timeIntervalSince(now) + 300) < 2)
        #expect(abs(certificate.notValidAfter.timeIntervalSince(now) - 365 * 86400) < 2)
        #expect(issued.serial.count == 32 && Array(certificate.serialNumber.bytes).count == 16)
        #expect(certificate.serialNumber.bytes.first.map { $0 & 0x80 == 0 } == true, "positive")
        #expect(try certificate.extensions.basicConstraints == .notCertificateAuthority)
        #expect(certificate.extensions[oid: .X509ExtensionID.basicConstraints]?.critical == true)
        let usage = try #require(try certificate.extensions.keyUsage)
        #expect(usage.digitalSignature && !usage.keyCertSign && !usage.keyEncipherment)
        #expect(certificate.extensions[oid: .X509ExtensionID.keyUsage]?.critical == true)
        #expect(try certificate.extensions.extendedKeyUsage?.contains(.clientAuth) == true)
        #expect(
            try certificate.extensions.authorityKeyIdentifier?.keyIdentifier
                == ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        #expect(try certificate.extensions.subjectKeyIdentifier != nil)
        #expect(try PEM.normalizeChain(issued.pem).pem == issued.pem, "PEM normal form, as a device writes it")
        let again = try issuer.issue(for: device.publicKey, commonName: "nrf-352656100123456", now: now)
        #expect(again.serial != issued.serial)
    }

    @Test func aCertificate_endsNoLaterThanItsIssuer() throws {
        let short = try CertificateFactory.rootCA(commonName: "Short CA", days: 10)
        let issuer = try ClientCertificateIssuer(certificate: short.certificate, key: short.key, validity: 365 * 86400)
        let issued = try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "d", now: Date())
        #expect(issued.certificate.notValidAfter == short.certificate.notValidAfter)
    }

    @Test func openSSL_verifiesItAsATLSClientCertificate() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("issuer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let issued = try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "nrf-1", now: Date())
        try ca.pem.write(to: dir.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
        try issued.pem.write(to: dir.appendingPathComponent("leaf.pem"), atomically: true, encoding: .utf8)
        func verify(_ purpose: String) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "openssl", "verify", "-CAfile", dir.appendingPathComponent("ca.pem").path, "-purpose", purpose,
                dir.appendingPathComponent("leaf.pem").path,
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            process.waitUntilExit()
            return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }
        #expect(try verify("sslclient").contains(": OK"))
        #expect(!(try verify("sslserver").contains(": OK")), "a client certificate only")
    }

    @Test func onlyACAWithItsOwnKey_canIssue() throws {
        let leafOnly = try CertificateFactory.rootCA(commonName: "Not a CA", isCA: false)
        #expect(throws: CertrotError.self) {
            _ = try ClientCertificateIssuer(certificate: leafOnly.certificate, key: leafOnly.key, validity: 86400)
        }
        #expect(throws: CertrotError.self) {
            _ = try ClientCertificateIssuer(
                certificate: ca.certificate, key: P256.Signing.PrivateKey(), validity: 86400)
        }
    }
}

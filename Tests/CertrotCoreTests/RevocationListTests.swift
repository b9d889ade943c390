import CertrotCore
import CertrotTestSupport
import Crypto
import Foundation
import Testing
import X509

/// CRLs as certrot writes them, read back by OpenSSL: signed by the issuer, listing each revoked serial as
/// superseded.
@Suite struct RevocationListTests {
    func openssl(_ arguments: [String], input: String? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// An issuing CA of `kind` (#35: P-384 and RSA besides P-256), self-signed as `certrot issuer init` makes it.
    static func ca(
        _ kind: IssuerKey.Kind, name: String = "Device CA"
    ) throws -> (
        certificate: Certificate, key: IssuerKey, pem: String
    ) {
        let key = IssuerKey.generate(kind)
        let certificate = try ClientCertificateIssuer.selfSignedCA(key: key, commonName: name, days: 3650, now: Date())
        return (certificate, key, try certificate.serializeAsPEM().pemString + "\n")
    }

    /// What OpenSSL names each kind's signature algorithm.
    static let opensslAlgorithm: [IssuerKey.Kind: String] = [
        .p256: "ecdsa-with-SHA256", .p384: "ecdsa-with-SHA384", .rsa2048: "sha256WithRSAEncryption",
        .rsa3072: "sha256WithRSAEncryption",
    ]

    /// Every kind of issuing CA: its certificates and its CRLs carry the algorithm its key calls for, and OpenSSL
    /// verifies both (`openssl crl`, `openssl verify -crl_check`); the device's key stays P-256.
    @Test(arguments: [IssuerKey.Kind.p256, .p384, .rsa2048, .rsa3072])
    func aCRL_verifiesUnderItsIssuer_andListsEveryRevokedSerialAsSuperseded(kind: IssuerKey.Kind) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("crl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let ca = try Self.ca(kind)
        let issuer = try ClientCertificateIssuer(certificate: ca.certificate, key: ca.key, validity: 86400)
        let revoked = try (0..<3).map { _ in
            try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "d", now: Date())
        }
        let kept = try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "k", now: Date())
        let now = Date()
        let pem = try RevocationList.make(
            issuer: ca.certificate, key: ca.key,
            entries: revoked.map {
                RevocationList.Entry(serial: Array($0.certificate.serialNumber.bytes), revokedAt: now)
            },
            number: 7, thisUpdate: now, nextUpdate: now.addingTimeInterval(7 * 86400))
        #expect(pem.hasPrefix("-----BEGIN X509 CRL-----\n") && pem.hasSuffix("-----END X509 CRL-----\n"))
        let crl = dir.appendingPathComponent("crl.pem").path
        let caPath = dir.appendingPathComponent("ca.pem").path
        try pem.write(toFile: crl, atomically: true, encoding: .utf8)
        try ca.pem.write(toFile: caPath, atomically: true, encoding: .utf8)
        let read = try openssl(["crl", "-in", crl, "-CAfile", caPath, "-noout", "-text"])
        #expect(read.status == 0 && read.output.contains("verify OK"), "\(read.output)")
        #expect(read.output.contains("Version 2") && read.output.contains("X509v3 CRL Number"))
        #expect(read.output.contains("Signature Algorithm: \(Self.opensslAlgorithm[kind]!)"), "\(read.output)")
        let leafText = try openssl(["x509", "-in", "/dev/stdin", "-noout", "-text"], input: kept.pem)
        #expect(leafText.output.contains("Signature Algorithm: \(Self.opensslAlgorithm[kind]!)"), "\(leafText.output)")
        #expect(leafText.output.contains("NIST CURVE: P-256"), "the device key stays P-256: \(leafText.output)")
        #expect(kept.certificate.signatureAlgorithm == ca.key.signatureAlgorithm)
        #expect(read.output.components(separatedBy: "Superseded").count - 1 == 3)
        for issued in revoked { #expect(read.output.uppercased().contains(issued.serial.uppercased())) }
        #expect(!read.output.uppercased().contains(kept.serial.uppercased()))

        // A client certificate checked against the CRL: revoked ones fail, the kept one passes.
        for (issued, expectOK) in [(revoked[0], false), (kept, true)] {
            let leaf = dir.appendingPathComponent("leaf.pem").path
            try issued.pem.write(toFile: leaf, atomically: true, encoding: .utf8)
            let verified = try openssl(["verify", "-crl_check", "-CAfile", caPath, "-CRLfile", crl, leaf])
            #expect(verified.output.contains(": OK") == expectOK, "\(verified.output)")
        }
        // Read back: the revoked serials, the issuer, and a signature that only the issuer's key made.
        let parsed = try RevocationList.parse(pem)
        #expect(Set(parsed.serials) == Set(revoked.map(\.serial)))
        #expect(parsed.issuer == ca.certificate.subject && parsed.nextUpdate != nil)
        #expect(parsed.isSigned(by: ca.certificate))
        #expect(parsed.signatureAlgorithm == ca.key.signatureAlgorithm)
        #expect(!parsed.isSigned(by: try Self.ca(kind, name: "Other CA").certificate))
        #expect(!parsed.isSigned(by: try CertificateFactory.rootCA(commonName: "Other CA").certificate))
        #expect(throws: CertrotError.self) { _ = try RevocationList.parse(ca.pem) }
        #expect(issuer.key.pkcs8PEM.map { try? IssuerKey(pem: $0).kind } == kind, "the key reads back as \(kind)")
        // An empty list is valid too.
        let empty = try RevocationList.make(
            issuer: ca.certificate, key: ca.key, entries: [], number: 1, thisUpdate: now,
            nextUpdate: now.addingTimeInterval(86400))
        try empty.write(toFile: crl, atomically: true, encoding: .utf8)
        #expect(try openssl(["crl", "-in", crl, "-CAfile", caPath, "-noout"]).output.contains("verify OK"))
    }
}

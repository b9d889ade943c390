import CertrotCore
import CertrotPKCS11
import CertrotServer
import CertrotTestSupport
import Crypto
import Foundation
import Testing
import X509

extension PKCS11Tests {
    /// An issuing CA whose P-384 or RSA key is in the token (#35 §1): `certrot issuer init --key-type K --pkcs11`
    /// makes the pair in the token and the CA certificate; the daemon's loader opens it as an issuer's key and
    /// refuses it as a bundle key (ES256); the certificates and the CRL it signs through C_Sign verify with OpenSSL
    /// (`openssl verify -crl_check`).
    @Test(arguments: [IssuerKey.Kind.p384, .rsa2048])
    func anIssuerKeyOfAnotherKind_inTheToken_signsCertificatesAndCRLs(kind: IssuerKey.Kind) throws {
        let token = try SoftHSM.shared()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("token-ca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let uri = try token.uri(object: "ca-\(kind.rawValue)-\(UUID().uuidString.prefix(8))")
        let made = try run(
            certrotBinary(),
            [
                "issuer", "init", "--key-type", kind.rawValue, "--pkcs11", uri, "--pin-file", token.pinFile, "--cert",
                path("ca.pem"), "--name", "Token \(kind.name) CA",
            ])
        #expect(made.status == 0 && made.output.contains(kind.name), "\(made.output)")

        let withPIN = uri + "&pin-source=\(token.pinFile)"
        let key = try KeyFile.loadIssuerKey(withPIN)
        #expect(key.kind == kind && key.pkcs8PEM == nil && key.location != nil, "the private key stays in the token")
        let refused = #expect(throws: CertrotError.self) { try KeyFile.load(withPIN) }
        #expect(refused?.message.contains("must be P-256") == true, "\(refused?.message ?? "")")

        let ca = try Certificate(pemEncoded: try String(contentsOfFile: path("ca.pem"), encoding: .utf8))
        #expect(ca.signatureAlgorithm == key.signatureAlgorithm && ca.publicKey == key.publicKey)
        let issuer = try ClientCertificateIssuer(certificate: ca, key: key, validity: 86400)
        let revoked = try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "nrf-1", now: Date())
        let kept = try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "nrf-2", now: Date())
        let crl = try RevocationList.make(
            issuer: ca, key: key,
            entries: [.init(serial: Array(revoked.certificate.serialNumber.bytes), revokedAt: Date())],
            number: 1, thisUpdate: Date(), nextUpdate: Date().addingTimeInterval(86400))
        #expect(try RevocationList.parse(crl).isSigned(by: ca))
        try crl.write(toFile: path("crl.pem"), atomically: true, encoding: .utf8)
        for (issued, name, ok) in [(revoked, "revoked.pem", false), (kept, "kept.pem", true)] {
            try issued.pem.write(toFile: path(name), atomically: true, encoding: .utf8)
            let verified = try run(
                "/usr/bin/env",
                ["openssl", "verify", "-crl_check", "-CAfile", path("ca.pem"), "-CRLfile", path("crl.pem"), path(name)])
            #expect(
                ok ? verified.output.contains(": OK") : verified.output.contains("certificate revoked"),
                "\(name): \(verified.output)")
        }
    }
}

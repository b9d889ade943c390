import CertrotCore
import CertrotServer
import CertrotTestSupport
import Crypto
import Foundation
import Testing
import X509

/// `certrot issuer init` and `certrot cert inspect` through the real binary: a KEYGEN output made by another
/// implementation (pyca/cryptography and cbor2), a certificate issued from the trial CA, and a CRL.
extension CLITests {
    private func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    private struct Vectors: Decodable {
        struct Output: Decodable {
            var keygen: String
            var secTag: Int64
        }
        var identityPublicKey: String
        var uuid: String
        var outputs: [Output]
    }

    @Test func issuerInit_andCertInspect_readKeygenOutputsCertificatesAndCRLs() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let made = try certrot(
            "issuer", "init", "--cert", path("ca.pem"), "--key", path("ca-key.pem"), "--name", "Trial CA")
        #expect(made.status == 0, "\(made.output)")
        var info = stat()
        #expect(stat(path("ca-key.pem"), &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try certrot("issuer", "init", "--cert", path("ca.pem"), "--key", path("other.pem")).status != 0)

        // A KEYGEN output from the vectors, for a sec tag above 2^31.
        let vectorsURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("CertrotCoreTests/Vectors/keygen.json")
        let vectors = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: vectorsURL))
        let output = try #require(vectors.outputs.first { $0.secTag > Int64(Int32.max) })
        try output.keygen.write(toFile: path("keygen.txt"), atomically: true, encoding: .utf8)
        let inspected = try certrot("cert", "inspect", path("keygen.txt"))
        #expect(inspected.status == 0, "\(inspected.output)")
        for expected in [
            "sec tag        \(output.secTag)", "device UUID    50503041-3633-4261-8003-d1e2b8c2f5a6",
            "digest         matches the CSR", "signature      not checked",
        ] {
            #expect(inspected.output.contains(expected), "missing '\(expected)' in \(inspected.output)")
        }
        let verified = try certrot("cert", "inspect", "--identity-key", vectors.identityPublicKey, path("keygen.txt"))
        #expect(verified.status == 0 && verified.output.contains("verified under the identity key"))
        let wrongTag = try certrot(
            "cert", "inspect", "--identity-key", vectors.identityPublicKey, "--tag", "7", path("keygen.txt"))
        #expect(wrongTag.status != 0 && wrongTag.output.contains("bad_attestation"), "\(wrongTag.output)")
        // A failed check is not a wrong command line: exit 1, the reason, no usage text (#35).
        #expect(wrongTag.status == 1 && !wrongTag.output.contains("Usage:"), "\(wrongTag.output)")
        let otherKey = Hex.encode(P256.Signing.PrivateKey().publicKey.x963Representation)
        #expect(try certrot("cert", "inspect", "--identity-key", otherKey, path("keygen.txt")).status != 0)

        // A certificate issued from the trial CA for the modem's key, and a CRL revoking it.
        let ca = try Certificate(pemEncoded: try String(contentsOfFile: path("ca.pem"), encoding: .utf8))
        let key = try KeyFile.loadSigningKey(path: path("ca-key.pem"))
        let issuer = try ClientCertificateIssuer(certificate: ca, key: key, validity: 86400)
        let modemKey = try KeygenOutput.parse(output.keygen).publicKey
        let issued = try issuer.issue(for: modemKey, commonName: "nrf-9", now: Date())
        try issued.pem.write(toFile: path("leaf.pem"), atomically: true, encoding: .utf8)
        let leaf = try certrot("cert", "inspect", path("leaf.pem"))
        #expect(leaf.status == 0 && leaf.output.contains("CN=nrf-9") && leaf.output.contains(issued.sha256))
        let crl = try RevocationList.make(
            issuer: ca, key: key,
            entries: [.init(serial: Array(issued.certificate.serialNumber.bytes), revokedAt: Date())],
            number: 1, thisUpdate: Date(), nextUpdate: Date().addingTimeInterval(86400))
        try crl.write(toFile: path("crl.pem"), atomically: true, encoding: .utf8)
        let listed = try certrot("cert", "inspect", "--issuer", path("ca.pem"), path("crl.pem"))
        #expect(listed.status == 0 && listed.output.contains(issued.serial) && listed.output.contains("verified"))
        _ = try certrot("issuer", "init", "--cert", path("ca2.pem"), "--key", path("ca2-key.pem"))
        #expect(try certrot("cert", "inspect", "--issuer", path("ca2.pem"), path("crl.pem")).status != 0)
    }

    /// `certrot issuer init --key-type` makes each kind of issuing CA (#35): a PKCS#8 key of that type (mode 0600,
    /// read back by OpenSSL and by certrot's issuer loader), a self-signed CA signed with the algorithm the key calls
    /// for, and a certificate and CRL from it that `certrot cert inspect` reads and verifies. An unknown type, a
    /// token that cannot be used, and an RSA key below 2048 bits are refused (keys in a token: PKCS11IssuerTests).
    @Test(arguments: [
        ("p384", "384 bit", "ecdsa-with-SHA384"), ("rsa2048", "2048 bit", "sha256WithRSAEncryption"),
        ("rsa4096", "4096 bit", "sha256WithRSAEncryption"),
    ])
    func issuerInit_makesEachKeyType(type: String, size: String, algorithm: String) throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let made = try certrot(
            "issuer", "init", "--key-type", type, "--cert", path("ca.pem"), "--key", path("ca-key.pem"))
        #expect(made.status == 0, "\(made.output)")
        var info = stat()
        #expect(stat(path("ca-key.pem"), &info) == 0 && info.st_mode & 0o777 == 0o600)
        let key = try run("/usr/bin/env", ["openssl", "pkey", "-in", path("ca-key.pem"), "-noout", "-text"])
        #expect(key.output.contains(size), "\(key.output.prefix(200))")
        let ca = try run("/usr/bin/env", ["openssl", "x509", "-in", path("ca.pem"), "-noout", "-text"])
        #expect(ca.output.contains("Signature Algorithm: \(algorithm)"), "\(ca.output)")
        #expect(try run("/usr/bin/env", ["openssl", "verify", "-CAfile", path("ca.pem"), path("ca.pem")]).status == 0)

        // The key loads as an issuer's key, and what it signs verifies.
        let issuerKey = try KeyFile.loadIssuerKey(path("ca-key.pem"))
        #expect(issuerKey.kind.rawValue == type)
        let certificate = try Certificate(pemEncoded: try String(contentsOfFile: path("ca.pem"), encoding: .utf8))
        let issuer = try ClientCertificateIssuer(certificate: certificate, key: issuerKey, validity: 86400)
        let issued = try issuer.issue(for: P256.Signing.PrivateKey().publicKey, commonName: "nrf-1", now: Date())
        try issued.pem.write(toFile: path("leaf.pem"), atomically: true, encoding: .utf8)
        let leaf = try certrot("cert", "inspect", path("leaf.pem"))
        #expect(leaf.status == 0 && leaf.output.contains("signed with"), "\(leaf.output)")
        let crl = try RevocationList.make(
            issuer: certificate, key: issuerKey,
            entries: [.init(serial: Array(issued.certificate.serialNumber.bytes), revokedAt: Date())],
            number: 1, thisUpdate: Date(), nextUpdate: Date().addingTimeInterval(86400))
        try crl.write(toFile: path("crl.pem"), atomically: true, encoding: .utf8)
        let listed = try certrot("cert", "inspect", "--issuer", path("ca.pem"), path("crl.pem"))
        #expect(listed.status == 0 && listed.output.contains("verified"), "\(listed.output)")
        let verified = try run(
            "/usr/bin/env",
            [
                "openssl", "verify", "-crl_check", "-CAfile", path("ca.pem"), "-CRLfile", path("crl.pem"),
                path("leaf.pem"),
            ])
        #expect(verified.output.contains("certificate revoked"), "\(verified.output)")

        #expect(
            try certrot("issuer", "init", "--key-type", "ed25519", "--cert", path("x.pem"), "--key", path("x-key.pem"))
                .status != 0)
        #expect(
            try certrot("issuer", "init", "--key-type", type, "--cert", path("y.pem"), "--pkcs11", "pkcs11:token=t")
                .status != 0)
    }

    @Test func anRSAIssuerKeyBelow2048Bits_isRefusedWithItsSize() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try run("/usr/bin/env", ["openssl", "genrsa", "-out", path("small.pem"), "1024"])
        chmod(path("small.pem"), 0o600)
        #expect {
            _ = try KeyFile.loadIssuerKey(path("small.pem"))
        } throws: { error in
            (error as? CertrotError)?.message.contains("this one: 1024") == true
        }
        // A P-256 key still loads as an issuer's (what every issuer was until #35).
        _ = try run(
            "/usr/bin/env",
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path("p256.pem")])
        chmod(path("p256.pem"), 0o600)
        #expect(try KeyFile.loadIssuerKey(path("p256.pem")).kind == .p256)
    }

    /// `certrot identity learn` on real modems' answers (Tests/CertrotCoreTests/Vectors/real-modem): two answers of
    /// one modem register its identity key and UUID in the identities file, keeping the other lines; one answer
    /// prints two candidates and writes nothing; answers of two modems are refused.
    @Test func identityLearn_registersTheKeyTwoRealAnswersShare() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let fixtures = try RealModemFixtures.load()
        let identity = try #require(fixtures.identityKeys.first)
        var files: [String] = []
        for id in identity.recoveredFrom {
            let text = try #require(fixtures.answer(id)).modemAnswer
            files.append(path("answer-\(id).txt"))
            // As a transcript shows it: the response line and OK.
            try "%KEYGEN: \"\(text)\"\r\nOK\r\n".write(toFile: files.last!, atomically: true, encoding: .utf8)
        }
        let identities = path("identities.jsonl")
        try "# fleet A\n".write(toFile: identities, atomically: true, encoding: .utf8)
        let one = try certrot("identity", "learn", "--device", "nrf-1", "--identities", identities, files[0])
        #expect(one.status == 2 && one.output.contains("2 keys fit"), "\(one.output)")
        #expect(try String(contentsOfFile: identities, encoding: .utf8) == "# fleet A\n", "nothing written")

        let learned = try run(
            certrotBinary(), ["identity", "learn", "--device", "nrf-1", "--identities", identities] + files)
        #expect(learned.status == 0 && learned.output.contains(identity.identityPublicKey), "\(learned.output)")
        let settings = try ClientCertSettings.loadIdentities(path: identities)
        let registered = try #require(settings[DeviceKey("nrf-1")])
        #expect(Hex.encode(registered.key.x963Representation) == identity.identityPublicKey)
        #expect(registered.uuid == ModemUUID.parse(identity.uuid))
        let text = try String(contentsOfFile: identities, encoding: .utf8)
        #expect(text.hasPrefix("# fleet A\n") && text.contains(identity.uuid))
        // Again: the device's line is replaced, not added.
        #expect(
            try run(certrotBinary(), ["identity", "learn", "--device", "nrf-1", "--identities", identities] + files)
                .status == 0)
        #expect(try ClientCertSettings.loadIdentities(path: identities).count == 1)

        // Another modem's answer beside them: refused.
        let other = try #require(fixtures.answer("A"))
        try other.keygen.write(toFile: path("answer-A.txt"), atomically: true, encoding: .utf8)
        let mixed = try certrot("identity", "learn", "--device", "nrf-2", files[0], path("answer-A.txt"))
        #expect(mixed.status != 0 && mixed.output.contains("attested by modem"), "\(mixed.output)")
    }
}

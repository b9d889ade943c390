import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// The `certrot` executable, run as a user would.
@Suite struct CLITests {
    let dir: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-cli-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    func certrot(_ arguments: String...) throws -> (status: Int32, output: String) {
        try run(certrotBinary(), arguments)
    }

    @Test func keysGenerate_writesA0600PKCS8Key_andPrintsItsKid() throws {
        let path = dir.appendingPathComponent("k.pem").path
        let result = try certrot("keys", "generate", "--out", path)
        #expect(result.status == 0)
        let key = try SigningKey(pem: try String(contentsOfFile: path, encoding: .utf8))
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines) == key.kid)
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)
        #expect(try certrot("keys", "generate", "--out", path).status != 0, "must not overwrite")
    }

    @Test func keysExport_printsPEM_JWK_andACArray() throws {
        let path = dir.appendingPathComponent("k.pem").path
        _ = try certrot("keys", "generate", "--out", path)
        let key = try SigningKey(pem: try String(contentsOfFile: path, encoding: .utf8))
        let pem = try certrot("keys", "export", "--key", path, "--format", "pem").output
        #expect(try VerificationKey(pem: pem) == key.publicKey)
        #expect(!pem.contains("PRIVATE"))
        let jwk = try certrot("keys", "export", "--key", path, "--format", "jwk").output
        let object = try JSONSerialization.jsonObject(with: Data(jwk.utf8)) as? [String: String]
        #expect(object?["kid"] == key.kid && object?["x"] == Base64URL.encode(key.publicKey.x))
        let c = try certrot("keys", "export", "--key", path, "--format", "c").output
        #expect(c.contains("static const unsigned char certrot_pubkey[65]"))
        #expect(c.contains(key.kid))
        let body = c.components(separatedBy: "= {").last ?? ""
        let bytes = body.split(whereSeparator: { ", \n};".contains($0) }).filter { $0.hasPrefix("0x") }
        #expect(bytes.count == 65)
        #expect(bytes.first == "0x04")
        #expect(bytes.map { UInt8($0.dropFirst(2), radix: 16)! } == key.publicKey.x963)
    }

    @Test func serve_refusesASigningKeyReadableByOthers() throws {
        let keyPath = dir.appendingPathComponent("k.pem").path
        _ = try certrot("keys", "generate", "--out", keyPath)
        chmod(keyPath, 0o644)
        let ca = try CertificateFactory.rootCA(commonName: "CLI CA")
        try ca.pem.write(toFile: dir.appendingPathComponent("ca.pem").path, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("c.yaml").path
        try """
        broker: {url: "mqtt://127.0.0.1:1"}
        store: sqlite:\(dir.appendingPathComponent("db").path)
        signingKey: \(keyPath)
        targets: [{name: ca, tag: 42, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let result = try certrot("serve", "--config", config)
        #expect(result.status != 0)
        #expect(result.output.contains("readable by group or others"))
        #expect(result.output.contains("chmod 600"))
    }

    @Test func serve_refusesAnExpiredOrOversizeTarget_namingTheProblem() throws {
        let keyPath = dir.appendingPathComponent("k.pem").path
        _ = try certrot("keys", "generate", "--out", keyPath)
        let expired = try CertificateFactory.rootCA(
            commonName: "Expired CA", notBefore: Date().addingTimeInterval(-86400 * 10),
            notAfter: Date().addingTimeInterval(-86400))
        try expired.pem.write(toFile: dir.appendingPathComponent("expired.pem").path, atomically: true, encoding: .utf8)
        var big: [CertificateFactory.Issued] = []
        while CertificateFactory.chain(big).utf8.count <= 4096 {
            big.append(try CertificateFactory.rootCA(commonName: "Big \(big.count)"))
        }
        try CertificateFactory.chain(big).write(
            toFile: dir.appendingPathComponent("big.pem").path, atomically: true, encoding: .utf8)
        for (file, message) in [("expired.pem", "expired"), ("big.pem", "allows at most 4096 bytes")] {
            let config = dir.appendingPathComponent("c-\(file).yaml").path
            try """
            broker: {url: "mqtt://127.0.0.1:1"}
            store: sqlite:\(dir.appendingPathComponent("db").path)
            signingKey: \(keyPath)
            targets: [{name: ca, tag: 42, type: 0, chain: \(dir.appendingPathComponent(file).path)}]
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let result = try certrot("serve", "--config", config)
            #expect(result.status != 0)
            #expect(result.output.contains(message), "\(result.output)")
        }
    }

    @Test func bundleInspect_verifiesAGoodBundle_andFlagsATamperedOne() throws {
        let key = SigningKey.generate()
        try key.publicKey.pem.write(
            toFile: dir.appendingPathComponent("pub.pem").path, atomically: true, encoding: .utf8)
        let ca = try CertificateFactory.rootCA(commonName: "Inspect CA")
        let claims = BundleClaims(
            sub: "dev-1", jti: "abc", iat: 1_800_000_000, exp: 1_800_600_000, seq: 3,
            ops: [.write(tag: 42, type: 0, pem: ca.pem)])
        let jws = try JWS.sign(claims, with: key)
        let parts = try Parts.split(jws: jws, jti: "abc", topic: "dev-1/certs", maxMessage: 512)
        let partsFile = dir.appendingPathComponent("parts.jsonl").path
        try parts.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n").write(
            toFile: partsFile, atomically: true, encoding: .utf8)
        let good = try certrot("bundle", "inspect", "--pubkey", dir.appendingPathComponent("pub.pem").path, partsFile)
        #expect(good.status == 0, "\(good.output)")
        #expect(good.output.contains("signature: valid"))
        #expect(good.output.contains("PEM rules: ok"))
        #expect(good.output.contains("seq=3"))

        var tampered = Array(jws.utf8)
        tampered[tampered.count / 2] =
            tampered[tampered.count / 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let tamperedFile = dir.appendingPathComponent("bad.jws").path
        try String(decoding: tampered, as: UTF8.self).write(toFile: tamperedFile, atomically: true, encoding: .utf8)
        let bad = try certrot("bundle", "inspect", "--pubkey", dir.appendingPathComponent("pub.pem").path, tamperedFile)
        #expect(bad.status != 0)
    }

    @Test func bundleMake_producesPartsThatInspectAccepts_withinMaxMessage() throws {
        let keyPath = dir.appendingPathComponent("k.pem").path
        _ = try certrot("keys", "generate", "--out", keyPath)
        let ca = try CertificateFactory.rootCA(commonName: "Make CA")
        let chainPath = dir.appendingPathComponent("ca.pem").path
        try ca.pem.replacingOccurrences(of: "\n", with: "\r\n").write(
            toFile: chainPath, atomically: true, encoding: .utf8)
        let made = try certrot(
            "bundle", "make", "--key", keyPath, "--device", "nrf-1", "--tag", "42", "--chain", chainPath,
            "--seq", "9", "--max-message", "300", "--parts")
        #expect(made.status == 0, "\(made.output)")
        let lines = made.output.split(separator: "\n").map(String.init)
        #expect(lines.count > 3)
        for line in lines {
            #expect(Parts.publishPacketSize(topicBytes: "nrf-1/certs".utf8.count, payloadBytes: line.utf8.count) <= 300)
        }
        let partsPath = dir.appendingPathComponent("made.jsonl").path
        try made.output.write(toFile: partsPath, atomically: true, encoding: .utf8)
        let inspected = try certrot("bundle", "inspect", "--pubkey", keyPath, partsPath)
        #expect(inspected.status == 0, "\(inspected.output)")
        #expect(inspected.output.contains("sub=nrf-1") && inspected.output.contains("seq=9"))
        #expect(inspected.output.contains("sha256=\(try PEM.normalizeChain(ca.pem).sha256)"))
    }

    @Test func configCheck_reportsEveryProblemWithItsKeyPath_andEnvironmentOverridesApply() throws {
        let keyPath = dir.appendingPathComponent("k.pem").path
        _ = try certrot("keys", "generate", "--out", keyPath)
        chmod(keyPath, 0o640)
        let ca = try CertificateFactory.rootCA(commonName: "Check CA")
        try ca.pem.write(toFile: dir.appendingPathComponent("ca.pem").path, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("check.yaml").path
        try """
        broker: {url: "http://nope"}
        store: mysql://x
        signingKey: \(keyPath)
        targets:
          - {name: ca, tag: 42, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}
          - {name: ca, tag: 43, type: 0, chain: /nonexistent.pem}
          - {name: client, tag: 44, type: 1, chain: \(dir.appendingPathComponent("ca.pem").path)}
          - {name: trust-key, tag: 45, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}
          - {name: ca.2, tag: 46, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let result = try certrot("config", "check", config)
        #expect(result.status != 0)
        for expected in [
            "broker: url 'http://nope'", "store: 'mysql://x' is neither sqlite:PATH nor postgres://", "signingKey:",
            "chmod 600", "targets[1]:", "/nonexistent.pem", "targets[2]:", "type 1 is not supported",
            "targets[3]: target 'trust-key': the name 'trust-key' is reserved for the next signing key",
            "targets[4]: target 'ca.2': the name 'ca.2' ends in .<number>, which names a campaign's target",
        ] {
            #expect(result.output.contains(expected), "missing '\(expected)' in:\n\(result.output)")
        }
        chmod(keyPath, 0o600)
        try """
        broker: {url: "mqtt://127.0.0.1:1883"}
        store: sqlite:\(dir.appendingPathComponent("db").path)
        signingKey: \(keyPath)
        targets: [{name: ca, tag: 42, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        #expect(try certrot("config", "check", config).output.contains("ok"))
        // A PIN in the signing key's URI is refused, and not printed.
        try """
        broker: {url: "mqtt://127.0.0.1:1883"}
        store: sqlite:\(dir.appendingPathComponent("db").path)
        signingKey: "pkcs11:token=t;object=k?module-path=/m.so&pin-value=s3cr3t-4242"
        targets: [{name: ca, tag: 42, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let withPIN = try certrot("config", "check", config)
        #expect(withPIN.status != 0 && withPIN.output.contains("pin-value=***"), "\(withPIN.output)")
        #expect(!withPIN.output.contains("s3cr3t-4242"), "\(withPIN.output)")
        try """
        broker: {url: "mqtt://127.0.0.1:1883"}
        store: sqlite:\(dir.appendingPathComponent("db").path)
        signingKey: \(keyPath)
        targets: [{name: ca, tag: 42, type: 0, chain: \(dir.appendingPathComponent("ca.pem").path)}]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        var loaded = try CertrotConfig.load(path: config)
        try loaded.applyEnvironment(["CERTROT_BROKER_URL": "mqtt://broker.example:1884", "CERTROT_ACK_TIMEOUT": "2m"])
        #expect(loaded.broker.url == "mqtt://broker.example:1884")
        #expect(loaded.ackTimeout?.seconds == 120)
        try loaded.applyEnvironment(["CERTROT_PKCS11_PIN_FILE": "/run/credentials/certrot.service/pkcs11-pin"])
        #expect(loaded.pkcs11?.pinFile == "/run/credentials/certrot.service/pkcs11-pin")
        #expect(throws: CertrotError.self) { try loaded.applyEnvironment(["CERTROT_ACK_TIMEOUT": "soon"]) }
    }
}

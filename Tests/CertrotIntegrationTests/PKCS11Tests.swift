import CertrotCore
import CertrotPKCS11
import CertrotServer
import CertrotSimulator
import CertrotStore
import CertrotTestSupport
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

/// Keys in a real SoftHSM2 token (docs/security.md, "Keys in a PKCS#11 token"): the token, its PIN and its keys made
/// by the test; the daemon signs bundles, audit checkpoints and client certificates with C_Sign. The module is
/// initialised once per process, so the suite shares ``SoftHSM/shared()`` and runs serially (one test hides it).
@Suite(.serialized) struct PKCS11Tests {
    func newKey(_ token: SoftHSM, _ name: String) throws -> (uri: String, key: SigningKey) {
        let uri = try token.uri(object: "\(name)-\(UUID().uuidString.prefix(8))")
        let key = try TokenKey.generate(uri: PKCS11URI(uri), pin: Array(token.pin.utf8))
        return (uri, SigningKey(external: key))
    }

    func waitUntil(_ what: String, timeout: Double = 60, _ done: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await done() { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("timed out waiting for \(what)")
        throw Harness.HarnessError.timeout
    }

    @Test func aTokenKeySigns_inParallelSessions_andEveryRefusalNamesTheURIAndTheReturnCode() async throws {
        let token = try SoftHSM.shared()
        let (uri, key) = try newKey(token, "unit")
        #expect(key.memoryKey == nil && key.pkcs8PEM == nil, "the private key is not in certrot's memory")
        let claims = BundleClaims(sub: "dev-1", jti: "j1", iat: 1, exp: 2, seq: 1, ops: [])
        let jws = try JWS.sign(claims, with: key)
        #expect(try JWS.verify(jws, keys: [key.publicKey]).claims.jti == "j1")

        // The same object again is refused; so are a wrong PIN, a missing object and a missing token.
        #expect(throws: CertrotError.self) { try TokenKey.generate(uri: PKCS11URI(uri), pin: Array(token.pin.utf8)) }
        // A wrong PIN, from a process of its own (within one process the token stays logged in once it is).
        let badPIN = token.directory.appendingPathComponent("bad-pin").path
        try "0000\n".write(toFile: badPIN, atomically: true, encoding: .utf8)
        chmod(badPIN, 0o600)
        let refused = try run(certrotBinary(), ["keys", "export", "--key", uri, "--pin-file", badPIN])
        #expect(refused.status != 0)
        #expect(refused.output.contains("C_Login failed: CKR_PIN_INCORRECT"), "\(refused.output)")
        #expect(refused.output.contains(uri))
        let exported = try run(certrotBinary(), ["keys", "export", "--key", uri, "--pin-file", token.pinFile])
        #expect(exported.status == 0)
        #expect(
            try VerificationKey(pem: exported.output) == key.publicKey, "keys export prints the token key's public key")
        let missing = #expect(throws: CertrotError.self) {
            try TokenKey.open(uri: PKCS11URI(try token.uri(object: "no-such-key")), pin: Array(token.pin.utf8))
        }
        #expect(missing?.message.contains("no EC or RSA private key") == true)
        let noToken = #expect(throws: CertrotError.self) {
            try TokenKey.open(
                uri: PKCS11URI("pkcs11:token=absent;object=x?module-path=\(try SoftHSM.module())"),
                pin: Array(token.pin.utf8))
        }
        #expect(noToken?.message.contains("CKR_TOKEN_NOT_PRESENT") == true)
        let noModule = #expect(throws: CertrotError.self) {
            try TokenKey.open(uri: PKCS11URI("pkcs11:token=t;object=x?module-path=/nonexistent/p11.so"), pin: [])
        }
        #expect(noModule?.message.contains("cannot be loaded") == true)

        // URIs that would hold a PIN, or widen the match, are refused before any module is loaded.
        for bad in [
            "pkcs11:token=certrot;object=k?module-path=/m.so&pin-value=1234",
            "pkcs11:token=certrot;objekt=k?module-path=/m.so", "pkcs11:token=certrot;object=k",
            "pkcs11:object=k?module-path=/m.so", "pkcs11:token=certrot;object=k;type=cert?module-path=/m.so",
            "pkcs11:token=certrot;object=k%4?module-path=/m.so",
        ] {
            #expect(throws: CertrotError.self, "\(bad)") { try PKCS11URI(bad) }
        }
        // The refusal does not repeat the PIN (it goes to stderr and journald).
        let withPIN = #expect(throws: CertrotError.self) {
            try PKCS11URI("pkcs11:token=certrot;object=k?pin-value=s3cr3t-4242&module-path=/m.so")
        }
        #expect(withPIN?.message.contains("s3cr3t-4242") == false && withPIN?.message.contains("pin-value=***") == true)
        #expect(
            PKCS11URI.redacted("pkcs11:a=b?pin-value=1&x=2;pin-value=3") == "pkcs11:a=b?pin-value=***&x=2;pin-value=***"
        )
        let parsed = try PKCS11URI("pkcs11:token=my%20token;id=%01%02;object=a?module-path=/m.so&pin-source=file:/p")
        #expect(parsed.token == "my token" && parsed.id == [1, 2] && parsed.pinSource == "/p")

        // The PIN: a file must be private; the environment is the fallback.
        let loose = token.directory.appendingPathComponent("loose-pin").path
        try token.pin.write(toFile: loose, atomically: true, encoding: .utf8)
        chmod(loose, 0o644)
        #expect(throws: (any Error).self) { try KeyFile.load(uri, pkcs11: .init(pinFile: loose)) }
        #expect(
            try KeyFile.pin(for: PKCS11URI(uri), pinFile: nil, environment: ["CERTROT_PKCS11_PIN": "42"]) == [52, 50])
        #expect(throws: (any Error).self) { try KeyFile.pin(for: PKCS11URI(uri), pinFile: nil, environment: [:]) }
        let loaded = try KeyFile.load(uri, pkcs11: .init(pinFile: token.pinFile, sessions: 4))
        #expect(loaded.kid == key.kid)

        // Eight threads through four sessions: every signature verifies.
        let failures = await withTaskGroup(of: Int.self) { group in
            for thread in 0..<8 {
                group.addTask {
                    var bad = 0
                    for index in 0..<40 {
                        let message = Array("message \(thread) \(index)".utf8)
                        guard let signature = try? loaded.signature(for: message),
                            loaded.publicKey.publicKey.isValidSignature(signature, for: message)
                        else {
                            bad += 1
                            continue
                        }
                    }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
    }

    /// A self-signed issuing CA whose key is in the token.
    func tokenCA(_ key: SigningKey, path: String) throws {
        let certificate = try ClientCertificateIssuer.selfSignedCA(
            key: key, commonName: "Token device CA", days: 400, now: Date())
        try (try certificate.serializeAsPEM().pemString + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func rotationCampaignKeyRotationAndClientCertificates_withEveryKeyInTheToken() async throws {
        let token = try SoftHSM.shared()
        let h = try Harness()
        let signing = try newKey(token, "bundle-signing")
        let next = try newKey(token, "bundle-signing-next")
        let issuer = try newKey(token, "device-ca")
        try tokenCA(issuer.key, path: h.path("token-ca.pem"))
        let count = 6
        var options = h.fleetOptions(devices: count)
        options.keys = [signing.key.publicKey]
        let ids = (1...count).map { options.deviceID($0) }
        let lab = try ClientIdentityLab(dir: h.dir.appendingPathComponent("identities"), devices: ids)
        options.prepare = { lab.provision(&$0) }
        let tags = ClientIdentityLab.tags
        var yaml = try String(
            contentsOfFile: try h.writeConfig(
                extra: """
                    pkcs11: {pinFile: \(token.pinFile), sessions: 2}
                    keyRotation: {nextKey: "\(next.uri)", threshold: 0.9}
                    issuers:
                      - {name: token-ca, cert: \(h.path("token-ca.pem")), key: "\(issuer.uri)", validity: 30d}
                    identities: \(lab.identitiesPath)
                    clientCerts:
                      - {name: device-identity, issuer: token-ca, tags: [\(tags[0]), \(tags[1])], subject: "CN={device}", caChain: broker-ca, renewBefore: 20d, attestation: required}
                    """), encoding: .utf8)
        yaml = yaml.replacingOccurrences(
            of: "signingKey: \(h.path("signing-key.pem"))", with: "signingKey: \"\(signing.uri)\"")
        try yaml.write(toFile: h.path("certrot.yaml"), atomically: true, encoding: .utf8)
        try h.startDaemon(configPath: h.path("certrot.yaml"))
        #expect(h.daemon?.settings.signer.location == signing.uri)
        let fleet = try h.startFleet(options)

        // The CA rotation, the next key's trust_key and each device's new identity, all signed in the token.
        _ = try await h.waitForFleet { ($0["verified"] ?? 0) >= count }
        try await waitUntil("every identity renewed") {
            (try h.storeScalar(
                "SELECT COUNT(*) FROM rotations WHERE target = 'client-cert:device-identity' AND state = 'verified'")
                ?? 0) == count
        }
        try await waitUntil("every device trusting the next key") {
            fleet.snapshot().allSatisfy { $0.trustedKeys.contains(next.key.publicKey) }
        }
        let caPEM = try String(contentsOfFile: h.path("token-ca.pem"), encoding: .utf8)
        let ca = try Certificate(pemEncoded: caPEM)
        for device in fleet.snapshot() {
            let tag = try #require(device.activeTag)
            #expect(tag == ClientIdentityLab.tags[1], "\(device.id) moved to the standby tag")
            let pem = try #require(device.credentials.first { $0.key.tag == tag && $0.key.type == 1 }?.value)
            let certificate = try Certificate(pemEncoded: String(decoding: pem, as: UTF8.self))
            #expect(certificate.issuer == ca.subject)
            #expect(ca.publicKey.isValidSignature(certificate.signature, for: certificate), "issued by the token's key")
        }

        // Promote the next key (in the token too) and roll out a newer CA by campaign: signed by it.
        await h.stopDaemon()
        yaml = try String(contentsOfFile: h.path("certrot.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "signingKey: \"\(signing.uri)\"", with: "signingKey: \"\(next.uri)\"")
            .replacingOccurrences(of: "keyRotation: {nextKey: \"\(next.uri)\", threshold: 0.9}", with: "")
            .replacingOccurrences(
                of: "targets: \n  - {name: broker-ca, tag: 42, type: 0, chain: \(h.path("new-ca.pem"))}",
                with: "targets: []"
            )
            .replacingOccurrences(of: "caChain: broker-ca", with: "caChain: new-ca")
        try yaml.write(toFile: h.path("certrot.yaml"), atomically: true, encoding: .utf8)
        try h.startDaemon(configPath: h.path("certrot.yaml"))
        let newer = try CertificateFactory.rootCA(commonName: "Newer CA", days: 800)
        let created = try await h.rpc().result(
            "campaign.create",
            params: [
                "name": "newer-ca", "targets": [["tag": 42, "type": 0, "chain": newer.pem, "strategy": "replace"]],
                "select": ["all": true],
            ], timeout: 30)
        let campaign = try #require(created["id"] as? String)
        try await waitUntil("the campaign done") {
            let status = try? await h.rpc().result("campaign.status", params: ["id": campaign])
            return status?["state"] as? String == "completed"
        }
        let newerDigest = try PEM.normalizeChain(newer.pem).sha256
        #expect(fleet.snapshot().allSatisfy { $0.digest(tag: 42) == newerDigest })

        // The audit log: every bundle has its record, and checkpoints signed in the token verify.
        let records = try AuditReader.records(storeURL: h.storeURL)
        let summary = try AuditChain.verify(records, keys: [signing.key.publicKey, next.key.publicKey])
        #expect(summary.lastCheckpoint != nil)
        let kids = Set(
            records.filter { $0.kind == .bundleSigned }.compactMap { record in
                (try? JSONSerialization.jsonObject(with: Data(record.body.utf8)) as? [String: Any])?["kid"] as? String
            })
        #expect(kids == [signing.key.kid, next.key.kid])
        // Stopped here, not left to the process's exit, where SoftHSM2's own teardown races a daemon still signing.
        await h.stop()
    }

    @Test func aTokenThatGoesAway_makesTheDaemonNotReady_andRotationsWait_untilItIsBack() async throws {
        let token = try SoftHSM.shared()
        let h = try Harness()
        let signing = try newKey(token, "bundle-signing")
        let httpPort = try Broker.freePort()
        var yaml = try String(
            contentsOfFile: try h.writeConfig(
                extra: "pkcs11: {pinFile: \(token.pinFile)}\nhttp: {host: 127.0.0.1, port: \(httpPort)}"),
            encoding: .utf8)
        yaml = yaml.replacingOccurrences(
            of: "signingKey: \(h.path("signing-key.pem"))", with: "signingKey: \"\(signing.uri)\"")
        try yaml.write(toFile: h.path("certrot.yaml"), atomically: true, encoding: .utf8)
        try h.startDaemon(configPath: h.path("certrot.yaml"))
        let http = MetricsTests()
        try await waitUntil("ready") { (try? await http.get(httpPort, "/readyz"))?.status == 200 }

        // The token goes; devices then ask for the new CA. Nothing can be signed: the rotations wait in the store.
        try token.hide()
        var restored = false
        defer { if !restored { try? token.restore() } }
        var options = h.fleetOptions(devices: 4)
        options.keys = [signing.key.publicKey]
        let fleet = try h.startFleet(options)
        try await waitUntil("rotations waiting for the signing key") {
            (try h.storeScalar(
                "SELECT COUNT(*) FROM rotations WHERE state = 'pending' AND jti IS NULL AND last_error LIKE 'waiting for the signing key%'"
            )
                ?? 0) == 4
        }
        let notReady = try await http.get(httpPort, "/readyz")
        #expect(notReady.status == 503)
        #expect(notReady.body.contains(signing.uri) && notReady.body.contains("CKR_"), "\(notReady.body)")
        let metrics = try await http.get(httpPort, "/metrics").body
        #expect((http.value(metrics, "certrot_signing_failures_total") ?? 0) > 0)
        #expect(try h.storeScalar("SELECT COUNT(*) FROM bundles") == 0)
        let oldDigest = try PEM.normalizeChain(h.oldCA.pem).sha256
        #expect(fleet.snapshot().allSatisfy { $0.digest(tag: 42) == oldDigest })

        // Back: the same key is found again, the waiting rotations are signed and verified, and the daemon is ready.
        try token.restore()
        restored = true
        _ = try await h.waitForFleet(timeout: 60) { ($0["verified"] ?? 0) == 4 }
        try await waitUntil("ready again") { (try? await http.get(httpPort, "/readyz"))?.status == 200 }
        let records = try AuditReader.records(storeURL: h.storeURL)
        #expect(records.filter { $0.kind == .bundleSigned }.count == 4)
        await h.stop()
    }
}

import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Crypto
import Foundation
import Testing
import X509

/// The mosquitto plugin certrot ships (deploy/mosquitto/plugin, `make mosquitto-plugin`): a real mosquitto with
/// `require_certificate true`, the plugin in place of `use_identity_as_username`, and the CRL certrot writes. A
/// revoked certificate is refused and its session closed without any restart of the broker.
@Suite(.serialized) struct RevocationPluginTests {
    typealias Client = TransportTests.Client

    static var plugin: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/mosquitto/certrot_revocation.so").path
    }

    /// A TLS listener requiring certificates from `ca`, with the plugin reading `crl`.
    static func listener(ca: String, crl: String, dir: URL, acl: Bool = true) throws -> Broker {
        let brokerCA = try CertificateFactory.rootCA(commonName: "Broker CA", days: 700)
        let leaf = try CertificateFactory.leaf(dnsName: "localhost", issuer: brokerCA)
        let path = { (name: String) in dir.appendingPathComponent(name).path }
        try brokerCA.pem.write(toFile: path("broker-ca.pem"), atomically: true, encoding: .utf8)
        try leaf.pem.write(toFile: path("broker.pem"), atomically: true, encoding: .utf8)
        try leaf.keyPEM.write(toFile: path("broker-key.pem"), atomically: true, encoding: .utf8)
        #expect(FileManager.default.fileExists(atPath: plugin), "make mosquitto-plugin builds \(plugin)")
        return try Broker(
            extraConfig: (acl ? "acl_file \(TransportTests.repoACL)\n" : "")
                + "plugin \(plugin)\nplugin_opt_crl_files \(crl)\nplugin_opt_ca_file \(ca)",
            tls: Broker.TLSFiles(
                caFile: ca, certFile: path("broker.pem"), keyFile: path("broker-key.pem"), identityFromPlugin: true))
    }

    static func tls(_ dir: URL, _ files: (cert: String, key: String)) -> MQTTTLSOptions {
        MQTTTLSOptions(
            caFile: dir.appendingPathComponent("broker-ca.pem").path, certFile: files.cert, keyFile: files.key)
    }

    /// Waits for the client's connection to drop (true), or `timeout` seconds (false).
    static func dropped(_ client: Client, within timeout: Double) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await client.next { if case .disconnected = $0 { true } else { false } } != nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeout))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    static func serial(of path: String) throws -> [UInt8] {
        Array(try Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8)).serialNumber.bytes)
    }

    static func writeCRL(_ pem: String, to path: String) throws {
        try pem.write(toFile: path + ".new", atomically: false, encoding: .utf8)
        guard rename(path + ".new", path) == 0 else { throw BrokerError(message: "rename failed") }
    }

    /// An operator's revocation, a CRL replaced by garbage, by a CRL of another key, and removed: the plugin
    /// enforces the last good CRL and says why in the broker's log; a new good CRL takes effect again.
    @Test func theLastGoodCRL_staysEnforced_throughGarbageForeignAndMissingFiles() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("plugin-\(UUID().uuidString.prefix(8))")
        let lab = try ClientIdentityLab(dir: dir, devices: [])
        defer { try? FileManager.default.removeItem(at: dir) }
        let revoked = try lab.clientCertificate(commonName: "dev-revoked")
        let kept = try lab.clientCertificate(commonName: "dev-kept")
        func crl(_ entries: [[UInt8]], key: P256.Signing.PrivateKey? = nil, number: Int64) throws -> String {
            try RevocationList.make(
                issuer: lab.ca.certificate, key: key.map { IssuerKey(SigningKey(privateKey: $0)) } ?? lab.ca.key,
                entries: entries.map { RevocationList.Entry(serial: $0, revokedAt: Date()) }, number: number,
                thisUpdate: Date(), nextUpdate: Date().addingTimeInterval(86400))
        }
        try Self.writeCRL(try crl([], number: 1), to: lab.crlPath)
        let broker = try Self.listener(ca: lab.caPath, crl: lab.crlPath, dir: dir)
        defer { broker.stop() }
        let port = try #require(broker.tlsPort)
        let session = try Client(port: port, id: "dev-revoked", tls: Self.tls(dir, revoked))
        #expect(await session.connected())
        let other = try Client(port: port, id: "dev-kept", tls: Self.tls(dir, kept))
        #expect(await other.connected())

        // The operator revokes dev-revoked's certificate: its session closes, it cannot come back, dev-kept stays.
        try Self.writeCRL(try crl([try Self.serial(of: revoked.cert)], number: 2), to: lab.crlPath)
        #expect(await Self.dropped(session, within: 4), "the revoked session is closed")
        session.mqtt.stop()
        func connects(_ files: (cert: String, key: String), _ id: String) async throws -> Bool {
            let client = try Client(port: port, id: id, tls: Self.tls(dir, files))
            defer { client.mqtt.stop() }
            return await client.outcome(timeout: 5) == true
        }
        #expect(try await !connects(revoked, "dev-revoked"))
        // The replacement files, each refused; the last good CRL is still enforced after each.
        let other2 = try CertificateFactory.rootCA(commonName: "Device CA", days: 30)
        let cases: [(String, () throws -> Void)] = [
            ("not a PEM CRL", { try Self.writeCRL("-----BEGIN X509 CRL-----\nAAAA\n", to: lab.crlPath) }),
            (
                "not signed by any certificate",
                { try Self.writeCRL(try crl([], key: other2.key, number: 3), to: lab.crlPath) }
            ),
            ("is gone", { try FileManager.default.removeItem(atPath: lab.crlPath) }),
        ]
        for (said, replace) in cases {
            try replace()
            try await Task.sleep(for: .milliseconds(1500))
            #expect(try await !connects(revoked, "dev-revoked"), "after a CRL that \(said)")
            let log = try String(contentsOfFile: broker.logPath, encoding: .utf8)
            #expect(log.contains(said), "the broker's log says the CRL \(said)")
        }
        #expect(await !Self.dropped(other, within: 0.5), "dev-kept's session stayed up throughout")
        // A good CRL without the entry: the certificate works again (the plugin reads new files, not just once).
        try Self.writeCRL(try crl([], number: 4), to: lab.crlPath)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try await connects(revoked, "dev-revoked"))
        other.mqtt.stop()
    }
}

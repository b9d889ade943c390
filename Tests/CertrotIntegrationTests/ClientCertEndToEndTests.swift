import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

/// Client-certificate renewal through a real mosquitto (docs/protocol.md §11): the daemon and a simulated fleet
/// on one broker, and a second mosquitto with a TLS listener that requires client certificates from the device
/// CA, applies deploy/mosquitto/acl, and runs certrot's revocation plugin, which maps each certificate's CN to a
/// username and enforces the daemon's CRL as it changes. Each device's `activate` connects to that listener.
@Suite(.serialized) struct ClientCertEndToEndTests {
    typealias Client = TransportTests.Client

    let devices = ["cc-00001", "cc-00002", "cc-00003", "cc-00004"]

    /// Under an issuing CA of each kind (#35): P-256, P-384 and RSA; the devices' keys stay the modem's P-256.
    @Test(.serialized, arguments: [IssuerKey.Kind.p256, .p384, .rsa3072])
    func aFleetIsRenewed_thenRenewedAgain_andItsOldCertificatesAreRefusedAndTheirSessionsClosed_withoutABrokerRestart(
        issuer kind: IssuerKey.Kind
    ) async throws {
        let h = try Harness()
        let lab = try ClientIdentityLab(
            dir: h.dir.appendingPathComponent("identities"), devices: devices, issuerKind: kind)
        // The TLS listener's own certificate, from a broker CA the devices trust: the chain written beside each
        // new identity (caChain) is that CA.
        let brokerCA = try CertificateFactory.rootCA(commonName: "Broker CA", days: 700)
        let brokerLeaf = try CertificateFactory.leaf(dnsName: "localhost", issuer: brokerCA)
        try brokerCA.pem.write(toFile: h.path("broker-ca.pem"), atomically: true, encoding: .utf8)
        try brokerLeaf.pem.write(toFile: h.path("broker.pem"), atomically: true, encoding: .utf8)
        try brokerLeaf.keyPEM.write(toFile: h.path("broker-key.pem"), atomically: true, encoding: .utf8)
        let targets = "\n  - {name: broker-ca-2026, tag: 42, type: 0, chain: \(h.path("broker-ca.pem"))}"
        let httpPort = try Broker.freePort()
        func config(validity: String, renewBefore: String) throws -> String {
            try h.writeConfig(
                targets: targets,
                extra: lab.yaml(caChain: "broker-ca-2026", renewBefore: renewBefore, validity: validity)
                    + "\nhttp: {host: 127.0.0.1, port: \(httpPort)}")
        }
        func verified() throws -> Int {
            try h.storeScalar(
                "SELECT COUNT(*) FROM rotations WHERE target = 'client-cert:device-identity' AND state = 'verified'")
                ?? 0
        }
        func issuedCount(_ state: String) throws -> Int {
            try h.storeScalar("SELECT COUNT(*) FROM issued_certs WHERE state = '\(state)'") ?? 0
        }
        func waitUntil(_ what: String, timeout: Double = 60, _ done: () throws -> Bool) async throws {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if try done() { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            Issue.record("timed out waiting for \(what)")
            throw Harness.HarnessError.timeout
        }

        // The factory certificates expire in 10 days, within renewBefore (60 days): the daemon renews them.
        try h.startDaemon(configPath: try config(validity: "30d", renewBefore: "20d"))
        try await waitUntil("the daemon's first CRL") { FileManager.default.fileExists(atPath: lab.crlPath) }
        // The listener as deploy/mosquitto/certrot-tls.conf has it: certrot's revocation plugin reads the CRL and
        // sets the username from the certificate's CN (no use_identity_as_username).
        let listener = try Broker(
            extraConfig: "acl_file \(TransportTests.repoACL)\nplugin \(RevocationPluginTests.plugin)\n"
                + "plugin_opt_crl_files \(lab.crlPath)\nplugin_opt_ca_file \(lab.caPath)",
            tls: Broker.TLSFiles(
                caFile: lab.caPath, certFile: h.path("broker.pem"), keyFile: h.path("broker-key.pem"),
                identityFromPlugin: true))
        defer { listener.stop() }
        var options = h.fleetOptions(devices: devices.count)
        options.idPrefix = "cc-"
        options.initial = [(42, 0, try PEM.normalizeChain(brokerCA.pem).bytes)]
        options.prepare = { lab.provision(&$0) }
        options.identityListener = .init(
            host: "127.0.0.1", port: try #require(listener.tlsPort), caFile: h.path("broker-ca.pem"))
        let fleet = try h.startFleet(options)
        try await waitUntil("every device renewed") { try verified() == devices.count }
        #expect(try issuedCount("active") == devices.count)
        let scrape = MetricsTests()
        let metrics = try await scrape.get(httpPort, "/metrics").body
        let count = Double(devices.count)
        #expect(scrape.value(metrics, #"certrot_client_certs_issued_total{issuer="device-ca"}"#) == count)
        #expect(scrape.value(metrics, #"certrot_client_certificates{issuer="device-ca",state="active"}"#) == count)
        #expect(
            scrape.value(metrics, #"certrot_rotations{target="client-cert:device-identity",state="verified"}"#)
                == count)
        let first = Dictionary(uniqueKeysWithValues: fleet.snapshot().map { ($0.id, $0) })
        for device in first.values {
            #expect(device.activeTag == ClientIdentityLab.tags[1], "\(device.id) moved to the standby tag")
        }

        // Sessions open with the certificates about to be superseded (one per device, as the device itself would
        // hold), and certrot's own, which nothing revokes.
        let sessions = try fleet.snapshot().map { device in
            try Client(
                port: try #require(listener.tlsPort), id: "\(device.id)-old",
                tls: try files(device, tag: ClientIdentityLab.tags[1]))
        }
        for session in sessions { #expect(await session.connected()) }
        let watcher = try lab.clientCertificate(commonName: "certrot")
        let certrot = try Client(
            port: try #require(listener.tlsPort), id: "certrot",
            tls: MQTTTLSOptions(caFile: h.path("broker-ca.pem"), certFile: watcher.cert, keyFile: watcher.key))
        #expect(await certrot.connected())
        try await certrot.subscribe(["+/certs/ack"])
        let brokerPID = listener.pid
        // When each of them is closed (nil: not within 90 s).
        let closings = sessions.map { session in
            Task { () -> Date? in await RevocationPluginTests.dropped(session, within: 90) ? Date() : nil }
        }

        // The operator raises renewBefore above what the first certificates have left: a second renewal, into
        // tag A, and the certificates it replaces are revoked.
        await h.stopDaemon()
        try h.startDaemon(configPath: try config(validity: "90d", renewBefore: "40d"))
        try await waitUntil("the second renewal and its revocations") {
            try issuedCount("revoked") == devices.count && issuedCount("active") == devices.count
        }
        try await waitUntil("every device verified again") { try verified() == devices.count }
        // The CRL file is written after the batch that revoked commits: wait for the one that lists them all.
        try await waitUntil("the CRL listing every revocation", timeout: 10) {
            let text = (try? String(contentsOfFile: lab.crlPath, encoding: .utf8)) ?? ""
            return (try? RevocationList.parse(text))?.serials.count == devices.count
        }
        let crl = try RevocationList.parse(String(contentsOfFile: lab.crlPath, encoding: .utf8))
        #expect(crl.serials.count == devices.count && crl.isSigned(by: lab.ca.certificate))
        #expect(crl.signatureAlgorithm == lab.ca.key.signatureAlgorithm, "the CRL is signed as a \(kind.name) CA signs")
        // Without any restart of the broker, each session with a revoked certificate is closed (the plugin looks
        // at the CRL every second and disconnects the clients it lists).
        // The last CRL write (each revocation's batch writes one): every session closed within a second or two of it,
        // as the broker's own log times it (the plugin's work, not this test's scheduling under load).
        let crlWritten =
            (try FileManager.default.attributesOfItem(atPath: lab.crlPath)[.modificationDate] as? Date) ?? Date()
        for (session, closing) in zip(sessions, closings) {
            #expect(await closing.value != nil, "the session with a revoked certificate is closed")
            session.mqtt.stop()
        }
        var closedAt: [String: Int] = [:]
        for line in try String(contentsOfFile: listener.logPath, encoding: .utf8).split(separator: "\n") {
            guard let range = line.range(of: ": certrot_revocation: disconnecting client "),
                let time = Int(line[..<range.lowerBound])
            else { continue }
            closedAt[String(line[range.upperBound...].prefix { $0 != ":" })] = time
        }
        let closed = sessions.indices.compactMap { closedAt["\(devices[$0])-old"] }
        #expect(closed.count == devices.count, "the broker's log names each closed session: \(closedAt)")
        let closedAfter = (closed.max() ?? .max) - Int(crlWritten.timeIntervalSince1970)
        print("revocation plugin: \(closed.count) sessions closed, the last \(closedAfter) s after the last CRL write")
        #expect(closedAfter <= 2, "closed within a second or two of the CRL change (the plugin looks every second)")
        #expect(listener.pid == brokerPID, "no broker restart")
        let now = Dictionary(uniqueKeysWithValues: fleet.snapshot().map { ($0.id, $0) })
        for id in devices {
            let device = try #require(now[id])
            let tag = try #require(device.activeTag)
            #expect(tag == ClientIdentityLab.tags[0], "\(id) is back in tag A, with a new key")
            let old = ClientIdentityLab.tags[1]
            // With its new certificate the device connects and may publish on its own topics (not another's).
            let current = try Client(port: listener.tlsPort!, id: id, tls: try files(device, tag: tag))
            #expect(await current.connected(), "\(id) connects with its new certificate")
            try current.publish("cc-99999/certs/ack", "not mine")
            try current.publish("\(id)/certs/ack", "mine")
            let seen = await certrot.message()
            #expect(seen?.topic == "\(id)/certs/ack" && seen?.text == "mine")
            current.mqtt.stop()
            // With the certificate it used before, revoked, it is refused.
            let oldFiles = try files(device, tag: old)
            let revoked = try Client(port: listener.tlsPort!, id: "\(id)-old", tls: oldFiles)
            #expect(await revoked.outcome(timeout: 5) != true, "\(id)'s revoked certificate is refused")
            revoked.mqtt.stop()
            // OpenSSL agrees, with the CRL as certrot wrote it: the new certificate verifies, the old one is revoked.
            let newFiles = try files(device, tag: tag)
            let verifyNew = try openssl(
                "verify", "-crl_check", "-CAfile", lab.caPath, "-CRLfile", lab.crlPath, newFiles.certFile!)
            #expect(verifyNew.status == 0 && verifyNew.output.contains(": OK"), "\(verifyNew.output)")
            let verifyOld = try openssl(
                "verify", "-crl_check", "-CAfile", lab.caPath, "-CRLfile", lab.crlPath, oldFiles.certFile!)
            #expect(verifyOld.status != 0 && verifyOld.output.contains("certificate revoked"), "\(verifyOld.output)")
            let leaf = try openssl("x509", "-in", newFiles.certFile!, "-noout", "-text")
            let algorithm = [IssuerKey.Kind.p256: "ecdsa-with-SHA256", .p384: "ecdsa-with-SHA384"][kind]
            #expect(
                leaf.output.contains("Signature Algorithm: \(algorithm ?? "sha256WithRSAEncryption")"), "\(leaf.output)"
            )
        }
        certrot.mqtt.stop()
        let log = try String(contentsOfFile: listener.logPath, encoding: .utf8)
        // The plugin refused each old certificate (libmosquitto retries, so at least once per device).
        #expect(
            log.components(separatedBy: "certrot_revocation: refused client").count - 1 >= devices.count,
            "the plugin refused each old certificate: \(log.suffix(2000))")
        #expect(log.contains("certrot_revocation: disconnecting client"))
        await h.stop()

        func openssl(_ arguments: String...) throws -> (status: Int32, output: String) {
            try run("/usr/bin/env", ["openssl"] + arguments)
        }

        /// The certificate and key `device` holds in `tag`, as files a TLS client loads.
        func files(_ device: SimulatedDevice, tag: Int64) throws -> MQTTTLSOptions {
            let cert = h.path("\(device.id)-\(tag).pem")
            let key = h.path("\(device.id)-\(tag)-key.pem")
            let pem = try #require(device.credentials.first { $0.key.tag == tag && $0.key.type == 1 }?.value)
            try String(decoding: pem, as: UTF8.self).write(toFile: cert, atomically: true, encoding: .utf8)
            try try #require(device.keyPEM(tag: tag)).write(toFile: key, atomically: true, encoding: .utf8)
            return MQTTTLSOptions(caFile: h.path("broker-ca.pem"), certFile: cert, keyFile: key)
        }
    }
}

/// `certrot serve` SIGKILLed again and again while a fleet renews its identities: between a CSR and its
/// certificate, between the certificate and its activation. Every device ends on a new identity certrot issued
/// and stored once, and none is left without a working tag.
@Suite(.serialized) struct ClientCertRestartTests {
    @Test func daemonSIGKILLedDuringRenewals_endsWithEveryDeviceOnANewIdentity_oneCertificatePerKeygen() async throws {
        let count = 200
        let kills = 8
        let ids = (1...count).map { String(format: "cr-%05d", $0) }
        let h = try Harness()
        let lab = try ClientIdentityLab(dir: h.dir.appendingPathComponent("identities"), devices: ids)
        let config = try h.writeConfig(ackTimeout: "5s", extra: lab.yaml(caChain: "broker-ca"))
        let log = h.path("serve.log")
        func serve() throws -> ChildProcess {
            try ChildProcess(
                executable: certrotBinary(), arguments: ["serve", "--config", config, "--log-level", "info"],
                outputPath: log)
        }
        var daemon = try serve()
        var options = h.fleetOptions(devices: count)
        options.idPrefix = "cr-"
        options.initial = [(42, 0, h.newChain.bytes)]
        options.prepare = { lab.provision(&$0) }
        let fleet = try h.startFleet(options)
        let verified =
            "SELECT COUNT(*) FROM rotations WHERE target = 'client-cert:device-identity' AND state = 'verified'"
        var generator = SystemRandomNumberGenerator()
        var verifiedAtKills: [Int] = []
        for kill in 0..<kills {
            try await waitForStarts(log, count: kill + 1)
            try await Task.sleep(for: .milliseconds(Int.random(in: 200...900, using: &generator)))
            daemon.signal(SIGKILL)
            while daemon.isRunning { usleep(5_000) }
            verifiedAtKills.append(((try? h.storeScalar(verified)) ?? nil) ?? 0)
            daemon = try serve()
        }
        defer { daemon.terminate() }
        #expect(verifiedAtKills.contains { $0 < count }, "kills landed mid-renewal: \(verifiedAtKills)")
        let deadline = Date().addingTimeInterval(120)
        while try h.storeScalar(verified) ?? 0 < count, Date() < deadline {
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(try h.storeScalar(verified) == count)
        // One certificate per keygen bundle of the same device, every one of them stored; each device on one
        // active certificate, the others (issued for a keygen whose activation a kill interrupted) revoked.
        #expect(
            try h.storeScalar(
                "SELECT COUNT(*) FROM issued_certs c LEFT JOIN bundles b ON b.jti = c.keygen_jti AND b.device = c.device WHERE b.jti IS NULL"
            ) == 0)
        #expect(try h.storeScalar("SELECT COUNT(*) FROM issued_certs WHERE state = 'active'") == count)
        #expect(try h.storeScalar("SELECT COUNT(*) FROM issued_certs WHERE state = 'issued'") == 0)
        let active = try h.storeScalar("SELECT COUNT(DISTINCT device) FROM issued_certs WHERE state = 'active'")
        #expect(active == count)
        let issued = try h.storeScalar("SELECT COUNT(*) FROM issued_certs") ?? 0
        // The store may show every device verified before the last daemon has logged its start.
        try await waitForStarts(log, count: kills + 1)
        let logText = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logText.components(separatedBy: "certrot starting").count - 1 == kills + 1)
        for device in fleet.snapshot() {
            let tag = try #require(device.activeTag, "\(device.id)")
            #expect(tag == ClientIdentityLab.tags[1], "\(device.id) moved to the standby tag")
            let certificate = try #require(device.credentials.first { $0.key.tag == tag && $0.key.type == 1 }?.value)
            #expect(
                try h.storeScalar(
                    "SELECT COUNT(*) FROM issued_certs WHERE device = '\(device.id)' AND state = 'active' AND sha256 = '\(Hex.sha256(certificate))'"
                ) == 1, "\(device.id) connects with the certificate certrot stored as active")
        }
        print(
            "client-cert restart test: \(count) devices, \(kills) kills (verified at each: \(verifiedAtKills)), "
                + "\(issued) certificates issued")
        await h.stop()
    }
}

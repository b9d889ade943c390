import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// TLS to the broker and the per-device ACL in deploy/mosquitto/acl, against a real mosquitto.
@Suite(.serialized) struct TransportTests {
    /// A PKI made at test time: one CA signs the broker's and every client's certificate.
    struct PKI {
        let dir: URL
        let ca: CertificateFactory.Issued
        init(brokerName: String = "localhost", brokerLoopbackIP: Bool = true) throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                "certrot-pki-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            ca = try CertificateFactory.rootCA(commonName: "Test PKI")
            try ca.pem.write(toFile: path("ca.pem"), atomically: true, encoding: .utf8)
            try issue("broker", dnsName: brokerName, loopbackIP: brokerLoopbackIP)
        }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        /// Writes NAME.pem and NAME-key.pem for a certificate whose CN is `dnsName`.
        @discardableResult
        func issue(_ name: String, dnsName: String, loopbackIP: Bool = true) throws -> MQTTTLSOptions {
            let leaf = try CertificateFactory.leaf(dnsName: dnsName, issuer: ca, loopbackIP: loopbackIP)
            try leaf.pem.write(toFile: path("\(name).pem"), atomically: true, encoding: .utf8)
            try leaf.keyPEM.write(toFile: path("\(name)-key.pem"), atomically: true, encoding: .utf8)
            return MQTTTLSOptions(
                caFile: path("ca.pem"), certFile: path("\(name).pem"), keyFile: path("\(name)-key.pem"))
        }
        var brokerFiles: Broker.TLSFiles {
            Broker.TLSFiles(caFile: path("ca.pem"), certFile: path("broker.pem"), keyFile: path("broker-key.pem"))
        }
    }

    /// A client whose events can be awaited in order.
    final class Client: @unchecked Sendable {
        let mqtt: MQTTClient
        private var iterator: AsyncStream<MQTTEvent>.Iterator
        init(port: Int32, id: String, tls: MQTTTLSOptions?, version: MQTTOptions.ProtocolVersion = .v311) throws {
            let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
            iterator = stream.makeAsyncIterator()
            var options = MQTTOptions(host: "127.0.0.1", port: port, clientID: id, protocolVersion: version)
            options.tls = tls
            mqtt = try MQTTClient(options: options, logger: .init(label: "test")) { input.yield($0) }
            try mqtt.start(timeout: 5)
        }
        func next(where match: (MQTTEvent) -> Bool) async -> MQTTEvent? {
            while let event = await iterator.next() { if match(event) { return event } }
            return nil
        }
        /// True on CONNACK, false when the connection is refused or dropped (e.g. a failed TLS handshake).
        func connected() async -> Bool {
            let event = await next {
                switch $0 {
                case .connected, .connectionRefused, .disconnected: true
                default: false
                }
            }
            if case .connected = event { return true }
            return false
        }
        /// The libmosquitto error messages seen until one contains `text` (returned), a connection succeeds, or
        /// `timeout` seconds pass (nil).
        func error(containing text: String, timeout: Double = 15) async -> String? {
            await withTaskGroup(of: String?.self) { group in
                group.addTask {
                    while let event = await self.next(where: { _ in true }) {
                        if case .connected = event { return nil }
                        if case .log(let message) = event, message.contains(text) { return message }
                    }
                    return nil
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(timeout))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
        }
        /// `connected()`, or nil when nothing happened within `timeout` seconds.
        func outcome(timeout: Double) async -> Bool? {
            await withTaskGroup(of: Bool?.self) { group in
                group.addTask { await self.connected() }
                group.addTask {
                    try? await Task.sleep(for: .seconds(timeout))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
        }
        func subscribe(_ filters: [String]) async throws {
            try mqtt.subscribe(filters)
            _ = await next { if case .subscribed = $0 { true } else { false } }
        }
        /// The next message's payload as text.
        func message() async -> (topic: String, text: String)? {
            guard case .message(let m) = await next(where: { if case .message = $0 { true } else { false } }) else {
                return nil
            }
            return (m.topic, String(decoding: m.payload, as: UTF8.self))
        }
        func publish(_ topic: String, _ text: String, retain: Bool = false) throws {
            try mqtt.publish(topic: topic, payload: Array(text.utf8), qos: 1, retain: retain)
        }
    }

    static var repoACL: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("deploy/mosquitto/acl").path
    }

    @Test func deployACL_confinesEachDeviceToItsOwnTopics() async throws {
        let pki = try PKI()
        let broker = try Broker(extraConfig: "acl_file \(Self.repoACL)", tls: pki.brokerFiles)
        defer { broker.stop() }
        let port = broker.tlsPort!
        let certrot = try Client(port: port, id: "certrot", tls: try pki.issue("certrot", dnsName: "certrot"))
        let deviceA = try Client(port: port, id: "dev-a", tls: try pki.issue("dev-a", dnsName: "dev-a"))
        let operatorClient = try Client(port: port, id: "operator", tls: try pki.issue("operator", dnsName: "operator"))
        #expect(await certrot.connected())
        #expect(await deviceA.connected())
        #expect(await operatorClient.connected())
        try await certrot.subscribe(["+/certs/inventory", "+/certs/ack", "certrot/rpc"])
        try await deviceA.subscribe(["dev-a/certs", "dev-b/certs", "certrot/rpc", "+/certs/inventory"])
        try await operatorClient.subscribe(["certrot/replies/#"])

        // A cannot read B's bundles: of two bundles published in order, A receives only its own.
        try certrot.publish("dev-b/certs", "bundle for B")
        try certrot.publish("dev-a/certs", "bundle for A")
        let received = await deviceA.message()
        #expect(received?.topic == "dev-a/certs" && received?.text == "bundle for A")

        // A cannot publish B's acks or inventory, nor call certrot/rpc: certrot sees only A's own ack after them.
        try deviceA.publish("dev-b/certs/ack", #"{"jti":"x","status":"applied"}"#)
        try deviceA.publish("dev-b/certs/inventory", #"{"v":1,"seq":0,"creds":[]}"#, retain: true)
        try deviceA.publish(
            "certrot/rpc", #"{"jsonrpc":"2.0","id":1,"method":"fleet.status","reply_to":"certrot/replies/x"}"#)
        try deviceA.publish("dev-a/certs/ack", "own ack")
        let first = await certrot.message()
        #expect(first?.topic == "dev-a/certs/ack" && first?.text == "own ack")

        // The operator may call the RPC and read the replies; certrot may answer there.
        try operatorClient.publish("certrot/rpc", "request")
        let request = await certrot.message()
        #expect(request?.topic == "certrot/rpc" && request?.text == "request")
        try certrot.publish("certrot/replies/operator-1", "reply")
        let reply = await operatorClient.message()
        #expect(reply?.text == "reply")

        // A's own retained inventory is accepted, and A does not see it (or anyone's) on the inventory filter.
        try deviceA.publish("dev-a/certs/inventory", "A inventory", retain: true)
        let inventory = await certrot.message()
        #expect(inventory?.topic == "dev-a/certs/inventory")
        try certrot.publish("dev-a/certs", "sentinel")
        #expect(await deviceA.message()?.text == "sentinel")
        [certrot, deviceA, operatorClient].forEach { $0.mqtt.stop() }
    }

    @Test func daemonOverMQTTS_withClientCertificate_rotatesDevices() async throws {
        let pki = try PKI()
        let broker = try Broker(tls: pki.brokerFiles)
        defer { broker.stop() }
        let certrotTLS = try pki.issue("certrot", dnsName: "certrot")
        let harness = try Harness(broker: broker)
        try harness.writeConfig()
        var yaml = try String(contentsOfFile: harness.path("certrot.yaml"), encoding: .utf8)
        yaml = yaml.replacingOccurrences(
            of: "url: \(broker.url)",
            with: """
                url: mqtts://127.0.0.1:\(broker.tlsPort!)
                  tls: {ca: \(certrotTLS.caFile), cert: \(certrotTLS.certFile!), key: \(certrotTLS.keyFile!)}
                """)
        try yaml.write(toFile: harness.path("certrot.yaml"), atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: harness.path("certrot.yaml"))
        _ = try harness.startFleet(harness.fleetOptions(devices: 5))  // devices on the plain listener
        let status = try await harness.waitForFleet { ($0["verified"] ?? 0) == 5 }
        #expect(status["devices"] as? Int == 5)
        await harness.stop()
    }

    @Test func wrongCA_orWrongHostname_failsTheConnection_withTheReason_andMissingFilesAreNamed() async throws {
        let pki = try PKI()
        let broker = try Broker(tls: pki.brokerFiles)
        defer { broker.stop() }
        let good = try pki.issue("client", dnsName: "client")
        // A client that trusts another CA never connects, and libmosquitto says why.
        let other = try PKI()
        let wrongCA = MQTTTLSOptions(caFile: other.path("ca.pem"), certFile: good.certFile, keyFile: good.keyFile)
        let untrusting = try Client(port: broker.tlsPort!, id: "c1", tls: wrongCA)
        #expect(await untrusting.error(containing: "certificate verify failed") != nil)
        untrusting.mqtt.stop()
        // The right CA connects.
        let ok = try Client(port: broker.tlsPort!, id: "c3", tls: good)
        #expect(await ok.outcome(timeout: 10) == true)
        ok.mqtt.stop()

        // A broker whose certificate names another host fails the hostname check.
        let otherHost = try PKI(brokerName: "broker.example", brokerLoopbackIP: false)
        let misnamed = try Broker(tls: otherHost.brokerFiles)
        defer { misnamed.stop() }
        let checked = try Client(
            port: misnamed.tlsPort!, id: "c4", tls: try otherHost.issue("client", dnsName: "client"))
        #expect(await checked.error(containing: "host name verification failed") != nil)
        checked.mqtt.stop()

        let missing = MQTTTLSOptions(caFile: pki.path("nope.pem"))
        do {
            try missing.validate()
            Issue.record("a missing CA file was accepted")
        } catch {
            #expect("\(error)".contains("broker.tls.ca") && "\(error)".contains("nope.pem"))
        }
    }
}

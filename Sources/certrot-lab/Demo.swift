import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Logging

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rotate a simulated fleet end to end on this machine, then clean up.",
        discussion: """
            Starts mosquitto on a free loopback port, the daemon with a temporary SQLite store and a fresh signing \
            key, and a simulated fleet holding an old CA in sec tag 42; the target is a new CA. Shows the rotation \
            until every device is verified, then prints fleet.status. Then a campaign: an unsafe one refused by the \
            never-brick preflight, and the next CA rolled out with the overlap strategy in four waves. Then the \
            devices' own client certificates, renewed in waves from keys their (simulated) modems generate \
            (docs/client-certificates.md).
            """)

    @Option(help: "Number of simulated devices.")
    var devices: Int = 1000
    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 300
    @Flag(
        help: ArgumentHelp(
            "When the demo is over, leave the daemon (and its console), the broker and the fleet running until "
                + "Ctrl-C; keep the temporary directory (config, store, keys, broker log)."))
    var keep = false
    @Flag(help: "Stop after the configured rotation (no campaign).")
    var noCampaign = false

    func run() async throws {
        let logger = makeStandardErrorLogger("certrot.demo", level: .warning)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-demo-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer {
            if keep { say("kept \(dir.path)") } else { try? FileManager.default.removeItem(at: dir) }
        }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let broker = try Broker()
        defer { broker.stop() }
        say("broker      mosquitto on \(broker.url)")

        // Old CA on the devices; the new CA the fleet must move to (two roots: the new one and a backup).
        let oldCA = try CertificateFactory.rootCA(commonName: "Example Broker CA 2025", days: 20)
        let newCA = try CertificateFactory.rootCA(commonName: "Example Broker CA 2026", days: 730)
        let backupCA = try CertificateFactory.rootCA(commonName: "Example Backup CA", days: 1825)
        try oldCA.pem.write(toFile: path("old-ca.pem"), atomically: true, encoding: .utf8)
        try CertificateFactory.chain([newCA, backupCA]).write(
            toFile: path("new-ca.pem"), atomically: true, encoding: .utf8)
        let key = SigningKey.generate()
        try KeyFile.write(key, to: path("signing-key.pem"))
        say("signing key kid \(key.kid)")
        // Every device's identity: a factory certificate from the device CA in sec tag A, with 300 days left.
        let ids = (1...max(devices, 1)).map { String(format: "dev-%05d", $0) }
        let lab = try ClientIdentityLab(dir: dir.appendingPathComponent("identities"), devices: ids, factoryDays: 300)

        // The console and the HTTP API on a free loopback port, with a token for pause, resume and abort.
        let httpPort = try Broker.freePort()
        let token = Base64URL.encode((0..<24).map { _ in UInt8.random(in: 0...255) })
        let yaml = """
            broker:
              url: \(broker.url)
              clientId: certrot-demo
            http: {host: 127.0.0.1, port: \(httpPort), tokens: [{name: demo, sha256: \(Hex.sha256(Array(token.utf8)))}]}
            store: sqlite:\(path("certrot.db"))
            signingKey: \(path("signing-key.pem"))
            ackTimeout: 20s
            retry: {base: 2s, factor: 2, cap: 10s, attempts: 5}
            targets:
              - {name: broker-ca-2026, tag: 42, type: 0, chain: \(path("new-ca.pem"))}
            catalogue:
              - {name: broker-ca-2025, chain: \(path("old-ca.pem"))}
            \(lab.yaml(caChain: "broker-ca-2026"))
            """
        try yaml.write(toFile: path("certrot.yaml"), atomically: true, encoding: .utf8)
        let settings = try DaemonSettings.resolve(try CertrotConfig.load(path: path("certrot.yaml")))
        let target = settings.targets[0]
        say(
            "target      \(target.name): tag 42, \(target.chain.bytes.count) bytes, sha256 \(target.sha256.prefix(16))…"
        )

        let daemon = CertrotDaemon(settings: settings, logger: logger)
        let started = Date()
        let daemonTask = Task { try await daemon.run() }
        defer { daemonTask.cancel() }
        say(
            "console     http://127.0.0.1:\(httpPort)/  (HTTP API under /api/v1/; token for pause, resume, abort: \(token))"
        )

        var options = FleetOptions(host: broker.host, port: broker.port, devices: devices, keys: [key.publicKey])
        options.initial = [(42, 0, Array(try PEM.normalizeChain(oldCA.pem).bytes))]
        options.failRate = 0.02
        options.offlineRate = 0.05
        options.incompleteRate = 0.02
        options.offlineDelay = 3
        options.prepare = { lab.provision(&$0) }
        let fleet = SimulatedFleet(options: options, logger: logger)
        try fleet.start()
        defer { fleet.stop() }
        say("fleet       \(devices) simulated nRF91 devices (2% fail a write once, 2% lose a part, 5% start offline)")
        say("")

        let rpc = try RPCClient(host: broker.host, port: broker.port, logger: logger)
        defer { rpc.close() }
        var last: [String: Any] = [:]
        var verified = 0
        while verified < devices {
            guard Date().timeIntervalSince(started) < timeout else {
                say("\ntimed out after \(Int(timeout)) s")
                say(FleetTable.render(last))
                throw ExitCode(1)
            }
            try await Task.sleep(for: .milliseconds(500))
            guard let status = try? await rpc.result("fleet.status", timeout: 5) else { continue }
            last = status
            let states = (status["states"] as? [String: Int]) ?? [:]
            verified = states["verified"] ?? 0
            let elapsed = Date().timeIntervalSince(started)
            let line = FleetTable.order.map { "\($0)=\(states[$0] ?? 0)" }.joined(separator: " ")
            say(String(format: "%6.1fs  ", elapsed) + "devices=\(status["devices"] ?? 0) " + line)
        }
        let wall = Date().timeIntervalSince(started)
        say("")
        say(FleetTable.render(last))
        let stats = fleet.stats
        let oversize = stats.oversizeMessages
        say("")
        say(
            String(
                format: "%d devices verified in %.1f s: %.0f rotations/s (wall time from daemon start)", devices, wall,
                Double(devices) / wall))
        say(
            "device acks: \(stats.acks.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")); messages over maxMessage: \(oversize)"
        )
        let sample = try await rpc.result("device.status", params: ["device": options.deviceID(1)])
        say("")
        say("device.status \(options.deviceID(1)):")
        say(
            String(
                decoding: try JSONSerialization.data(withJSONObject: sample, options: [.prettyPrinted, .sortedKeys]),
                as: UTF8.self))
        guard oversize == 0 else { throw ExitCode(1) }
        if !noCampaign {
            try await campaign(rpc: rpc, started: started)
            try await identities(rpc: rpc, started: started, sample: options.deviceID(1))
        }
        if keep {
            say("")
            say(
                "console     still up at http://127.0.0.1:\(httpPort)/ with the daemon, broker and fleet; Ctrl-C stops them"
            )
            while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
        }
    }

    /// Act three: the fleet's client certificates renewed in waves, each key generated in the device's modem.
    func identities(rpc: RPCClient, started: Date, sample: String) async throws {
        say("")
        say("identities  client certificates renewed in A/B sec tags: keygen in the modem, CSR attested, issued")
        let params: [String: Any] = [
            "name": "identities-2027", "kind": "client-cert", "clientCert": "device-identity",
            "select": ["all": true], "waves": ["1%", "10%", "50%", "100%"],
        ]
        let created = try await rpc.result("campaign.create", params: params, timeout: 60)
        let id = created["id"] as? String ?? ""
        say("campaign    \(id): \(created["devices"] ?? 0) devices in \(created["waves"] ?? 0) waves")
        try await follow(campaign: id, rpc: rpc, started: started)
        let fleet = try await rpc.result("fleet.status", timeout: 5)
        let policy = (fleet["clientCerts"] as? [String: Any])?["device-identity"] as? [String: Any] ?? [:]
        let counts = policy["certificates"] as? [String: Int] ?? [:]
        say("issued      " + counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        let status = try await rpc.result("device.status", params: ["device": sample])
        // As JSON, like every other answer certrot prints: a person reads it, and so does jq.
        let identity = (status["clientCertificate"] as? [String: Any]).flatMap {
            try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys, .withoutEscapingSlashes])
        }
        say("identity    \(sample): " + (identity.map { String(decoding: $0, as: UTF8.self) } ?? "none"))
    }

    /// Act two: the next CA as a campaign, in waves, with the preflight shown refusing an unsafe one first.
    func campaign(rpc: RPCClient, started: Date) async throws {
        say("")
        say("campaign    next CA (2027), strategy overlap, waves 1%,10%,50%,100%, endpoint chain checked")
        let ca2027 = try CertificateFactory.rootCA(commonName: "Example Broker CA 2027", days: 1095)
        let server = try CertificateFactory.leaf(dnsName: "mqtt.example.com", issuer: ca2027)
        let stranger = try CertificateFactory.rootCA(commonName: "Somebody Else's CA", days: 1095)
        let wrongServer = try CertificateFactory.leaf(dnsName: "mqtt.example.com", issuer: stranger)
        var params: [String: Any] = [
            "name": "broker-ca-2027", "targets": [["tag": 42, "type": 0, "chain": ca2027.pem, "strategy": "overlap"]],
            "select": ["all": true], "waves": ["1%", "10%", "50%", "100%"], "endpointChain": wrongServer.pem,
        ]
        let refused = try await rpc.call("campaign.create", params: params, timeout: 60)
        let error = refused["error"] as? [String: Any] ?? [:]
        say("preflight   refused (\(error["code"] ?? "?")): \(error["message"] ?? "accepted?!")")
        params["endpointChain"] = server.pem
        let created = try await rpc.result("campaign.create", params: params, timeout: 60)
        let id = created["id"] as? String ?? ""
        say("preflight   accepted: \(id), \(created["devices"] ?? 0) devices in \(created["waves"] ?? 0) waves")
        try await follow(campaign: id, rpc: rpc, started: started)
    }

    /// Shows a campaign's progress until it completes.
    func follow(campaign id: String, rpc: RPCClient, started: Date) async throws {
        let begun = Date()
        var shown = ""
        while true {
            guard Date().timeIntervalSince(started) < timeout else {
                say("\ntimed out after \(Int(timeout)) s")
                throw ExitCode(1)
            }
            try await Task.sleep(for: .milliseconds(500))
            guard let status = try? await rpc.result("campaign.status", params: ["id": id], timeout: 5) else {
                continue
            }
            let text = Progress.render(status, tty: false).joined(separator: "\n")
            if text != shown {
                say(String(format: "%6.1fs  ", Date().timeIntervalSince(begun)) + text)
                shown = text
            }
            let state = status["state"] as? String ?? ""
            if state == "completed" { break }
            if state == "paused" || state == "aborted" {
                say("campaign stopped: \(status["reason"] ?? "")")
                throw ExitCode(1)
            }
        }
        say(String(format: "campaign completed in %.1f s", Date().timeIntervalSince(begun)))
    }
}

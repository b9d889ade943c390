import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotStore
import CertrotTestSupport
import Foundation
import Logging

/// The issuance loop of red-team #32 (finding 3), against any build of `certrot`: devices that report their
/// active client certificate as expiring tomorrow after every install. Prints what the daemon signed and kept.
struct HostileIssuance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostile-issuance",
        abstract: "Measure how many certificates lying devices make a certrot build sign (docs/security.md).",
        discussion: """
            Starts mosquitto on a free loopback port and `BIN serve` with a fresh SQLite store, an issuer (with a \
            CRL) and a clientCerts policy; then --devices simulated devices whose factory certificate is due, each \
            reporting after every install (and every 2 s) that its certificate expires in a day. After --seconds it prints the \
            certificates issued, the CRL's entries and size, and the audit records, and stops everything. Extra \
            YAML (--extra-yaml) is appended to the daemon's config.
            """)

    @Option(help: "The certrot binary to measure.") var bin = ".build/release/certrot"
    @Option(help: "Lying devices.") var devices = 1
    @Option(help: "Seconds to let them run.") var seconds: Double = 40
    @Option(help: "More top-level YAML for the daemon's config.") var extraYaml = ""
    @Option(help: "Write the figures as JSON here.") var out: String?
    @Flag(help: "Keep the temporary directory (config, store, the daemon's log).") var keep = false

    func run() async throws {
        let logger = makeStandardErrorLogger("certrot.hostile-issuance", level: .error)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-hostile-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { if keep { print("kept \(dir.path)") } else { try? FileManager.default.removeItem(at: dir) } }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let broker = try Broker()
        defer { broker.stop() }
        let brokerCA = try CertificateFactory.rootCA(commonName: "Broker CA", days: 700)
        try brokerCA.pem.write(toFile: path("broker-ca.pem"), atomically: true, encoding: .utf8)
        let key = SigningKey.generate()
        try KeyFile.write(key, to: path("signing-key.pem"))
        let ids = (1...max(devices, 1)).map { String(format: "liar-%05d", $0) }
        let lab = try ClientIdentityLab(dir: dir.appendingPathComponent("identities"), devices: ids)
        let yaml = """
            broker: {url: \(broker.url), clientId: certrot-hostile}
            store: sqlite:\(path("certrot.db"))
            signingKey: \(path("signing-key.pem"))
            ackTimeout: 20s
            retry: {base: 1s, factor: 2, cap: 5s, attempts: 5}
            targets:
              - {name: broker-ca, tag: 42, type: 0, chain: \(path("broker-ca.pem"))}
            \(lab.yaml(caChain: "broker-ca"))
            \(extraYaml)
            """
        try yaml.write(toFile: path("certrot.yaml"), atomically: true, encoding: .utf8)
        let serve = try ChildProcess(
            executable: bin, arguments: ["serve", "--config", path("certrot.yaml"), "--log-level", "error"],
            outputPath: path("serve.log"))
        defer { serve.terminate() }
        try await Task.sleep(for: .seconds(2))
        var options = FleetOptions(host: broker.host, port: broker.port, devices: devices, keys: [key.publicKey])
        options.idPrefix = "liar-"
        options.initial = [(42, 0, Array(try PEM.normalizeChain(brokerCA.pem).bytes))]
        options.prepare = { lab.provision(&$0) }
        for id in ids { options.behaviours[id] = DeviceBehaviour(claimsEarlyExpiry: true) }
        let fleet = SimulatedFleet(options: options, logger: logger)
        try fleet.start()
        defer { fleet.stop() }
        // Each device also reports its inventory every 2 s, as a device checking in would, so that the claim is
        // heard after any pacing of the first report that follows an install.
        let reporter = try MQTTClient(
            options: MQTTOptions(
                host: broker.host, port: broker.port, clientID: "liar-reporter", protocolVersion: .v311),
            logger: logger
        ) { _ in }
        try reporter.start()
        defer { reporter.stop() }
        let started = Date()
        while Date().timeIntervalSince(started) < seconds {
            try await Task.sleep(for: .seconds(2))
            for device in fleet.snapshot() {
                _ = try? reporter.publish(
                    topic: Topics.inventory(device.id), payload: device.inventory.encoded(), qos: 1, retain: true)
            }
        }
        let elapsed = Date().timeIntervalSince(started)
        fleet.stop()
        serve.terminate()
        // The store, read after the daemon stopped (the same SQLite file every build writes).
        let store = try openStore(url: "sqlite:\(path("certrot.db"))")
        defer { store.close() }
        let (issued, audit) = try store.read { tx in
            (
                try tx.issuedCounts().values.reduce(0) { $0 + $1.values.reduce(0, +) },
                try tx.auditRecords(after: 0, limit: 10_000_000, since: nil, device: nil).count
            )
        }
        let crl = (try? String(contentsOfFile: lab.crlPath, encoding: .utf8)) ?? ""
        let listed = (try? RevocationList.parse(crl).serials.count) ?? 0
        let figures: [String: Any] = [
            "devices": devices, "seconds": Double(Int(elapsed * 10)) / 10, "certificatesIssued": issued,
            "crlEntries": listed, "crlBytes": crl.utf8.count, "auditRecords": audit, "bin": bin,
        ]
        print(
            "\(devices) lying device(s), \(String(format: "%.1f", elapsed)) s: \(issued) certificates issued, "
                + "CRL \(listed) entries (\(crl.utf8.count) bytes), \(audit) audit records")
        if let out {
            let data = try JSONSerialization.data(withJSONObject: figures, options: [.sortedKeys, .prettyPrinted])
            try data.write(to: URL(fileURLWithPath: out))
        }
    }
}

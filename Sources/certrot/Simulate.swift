import ArgumentParser
import CertrotCore
import CertrotMQTT
import CertrotSimulator
import Foundation
import Logging

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a reference fleet of simulated nRF91 devices against a broker.",
        discussion: """
            Each device publishes its retained inventory, reassembles bundle parts, verifies the JWS with the \
            pinned key, checks sub, seq, exp, the PEM rules and the 4 KB limit, writes its sec tags, acks, and \
            republishes its inventory. Runs until interrupted or --duration passes.
            """)

    @Option(help: "Broker URL, mqtt://host[:port].")
    var broker: String
    @Option(help: "Number of devices.")
    var devices: Int = 100
    @Option(help: "Public key (PEM) the devices pin; a signing key file works too.")
    var pubkey: String
    @Option(help: "Device ID prefix; IDs are <prefix><5-digit index>.")
    var idPrefix: String = "dev-"
    @Option(help: "Device profile (nrf91: 2,048-byte messages, 4,096-byte credentials).")
    var profile: String = "nrf91"
    @Option(help: "Share of devices that reject every bundle.")
    var rejectRate: Double = 0
    @Option(help: "Share of devices whose first write fails.")
    var failRate: Double = 0
    @Option(help: "Share of devices that come online only after --offline-delay seconds.")
    var offlineRate: Double = 0
    @Option(help: "Share of devices that lose a part of their first bundle and ask for it again.")
    var incompleteRate: Double = 0
    @Option(help: "Share of devices that list \"cose\" in their inventory and take compact bundles (protocol.md §12).")
    var compactShare: Double = 0
    @Option(help: "Seconds before offline devices come online.")
    var offlineDelay: Double = 5
    @Option(help: "A chain every device holds at start (e.g. the CA being replaced).")
    var chain: String?
    @Option(help: "The sec tag that holds --chain.")
    var tag: Int64 = 42
    @Option(help: "Devices per MQTT connection.")
    var devicesPerConnection: Int = 100
    @Option(help: "Stop after this many seconds (default: run until interrupted).")
    var duration: Double?
    @OptionGroup var log: LogOptions

    func run() async throws {
        guard profile == "nrf91" else { throw ValidationError("unknown profile '\(profile)' (known: nrf91)") }
        guard let url = MQTTOptions.parseURL(broker), !url.tls else {
            throw ValidationError("--broker must be mqtt://host[:port] (the simulator does not speak TLS yet)")
        }
        let logger = log.makeLogger("certrot.simulate")
        let text = try String(contentsOfFile: pubkey, encoding: .utf8)
        guard let key = try? VerificationKey(anyPEM: text) else {
            throw ValidationError("\(pubkey) is not a P-256 key in PEM form")
        }
        var options = FleetOptions(host: url.host, port: url.port, devices: devices, keys: [key])
        options.idPrefix = idPrefix
        options.rejectRate = rejectRate
        options.failRate = failRate
        options.offlineRate = offlineRate
        options.incompleteRate = incompleteRate
        options.compactShare = compactShare
        options.offlineDelay = offlineDelay
        options.devicesPerConnection = devicesPerConnection
        if let chain {
            let normalized = try PEM.normalizeChain(try String(contentsOfFile: chain, encoding: .utf8))
            options.initial = [(tag, 0, normalized.bytes)]
        }
        let fleet = SimulatedFleet(options: options, logger: logger)
        try fleet.start()
        logger.info("simulating \(devices) devices", metadata: ["broker": "\(broker)"])
        let started = Date()
        while duration.map({ Date().timeIntervalSince(started) < $0 }) ?? true {
            try await Task.sleep(for: .seconds(1))
            let stats = fleet.stats
            logger.info(
                "fleet",
                metadata: [
                    "acks": "\(stats.acks)", "parts": "\(stats.partsReceived)", "oversize": "\(stats.oversizeMessages)",
                ])
        }
        fleet.stop()
    }
}

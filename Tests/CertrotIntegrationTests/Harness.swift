import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import GRDB
import Logging
import Testing

/// A broker, keys, chains and a config on disk, for one test. Everything is torn down by `stop()`.
final class Harness: @unchecked Sendable {
    // Used by one test at a time; the tasks it starts only read the immutable settings.
    let broker: Broker
    let dir: URL
    let key = SigningKey.generate()
    let oldCA: CertificateFactory.Issued
    let newCA: CertificateFactory.Issued
    var logger = Logger(label: "certrot.test")
    private var daemonTask: Task<Void, any Error>?
    private(set) var daemon: CertrotDaemon?
    private var fleets: [SimulatedFleet] = []
    private var rpcClient: RPCClient?
    /// The daemon's `store:` URL: a SQLite file in `dir`, or a fresh database on the test PostgreSQL.
    let storeKind: StoreKind
    let storeURL: String

    init(broker: Broker? = nil, store: StoreKind = .sqlite) throws {
        self.broker = try broker ?? Broker()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        storeKind = store
        storeURL = store == .sqlite ? "sqlite:\(dir.appendingPathComponent("certrot.db").path)" : try store.freshURL()
        oldCA = try CertificateFactory.rootCA(commonName: "Old CA", days: 20)
        newCA = try CertificateFactory.rootCA(commonName: "New CA", days: 700)
        try oldCA.pem.write(toFile: path("old-ca.pem"), atomically: true, encoding: .utf8)
        try newCA.pem.write(toFile: path("new-ca.pem"), atomically: true, encoding: .utf8)
        try KeyFile.write(key, to: path("signing-key.pem"))
        logger.logLevel =
            ProcessInfo.processInfo.environment["CERTROT_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// One integer from the daemon's store, whichever kind it is: for checks the store protocol does not offer.
    func storeScalar(_ sql: String) throws -> Int? {
        switch storeKind {
        case .sqlite:
            return try DatabaseQueue(path: path("certrot.db")).read { db in try Int.fetchOne(db, sql: sql) }
        case .postgres:
            let database = String(storeURL.split(separator: "/").last!)
            return Int(try PostgresServer.shared().psql(sql, database: database))
        }
    }

    var newChain: CertificateChain { try! PEM.normalizeChain(newCA.pem) }

    /// Writes the daemon config and returns its path. `targets`: the YAML list of configured targets (default:
    /// the new CA in tag 42); `extra`: more top-level YAML.
    @discardableResult
    /// `certrot serve` as a process of its own with `config`, logging at `logLevel` to a file (returned), once it
    /// answers `device.status` on `certrot/rpc`: for tests that read what the daemon logs.
    func serveProcess(config: String, logLevel: String) async throws -> (ChildProcess, log: String) {
        let log = path("serve.log")
        let serve = try ChildProcess(
            executable: certrotBinary(), arguments: ["serve", "--config", config, "--log-level", logLevel],
            outputPath: log)
        let rpc = try self.rpc()
        for _ in 0..<50 {
            if (try? await rpc.call("device.status", params: ["device": "probe-0"], timeout: 2)) != nil {
                return (serve, log)
            }
        }
        serve.terminate()
        throw BrokerError(message: "certrot serve did not answer on certrot/rpc; its log: \(log)")
    }

    func writeConfig(
        ackTimeout: String = "20s", retryBase: String = "1s", targets: String? = nil, extra: String = ""
    ) throws -> String {
        let targetList = targets ?? "\n  - {name: broker-ca, tag: 42, type: 0, chain: \(path("new-ca.pem"))}"
        let yaml = """
            broker:
              url: \(broker.url)
              clientId: certrot-test
            store: \(storeURL)
            signingKey: \(path("signing-key.pem"))
            ackTimeout: \(ackTimeout)
            retry: {base: \(retryBase), factor: 2, cap: 5s, attempts: 5}
            targets: \(targetList)
            catalogue:
              - {name: old-ca, chain: \(path("old-ca.pem"))}
              - {name: new-ca, chain: \(path("new-ca.pem"))}
            \(extra)
            """
        try yaml.write(toFile: path("certrot.yaml"), atomically: true, encoding: .utf8)
        return path("certrot.yaml")
    }

    /// Starts the daemon in this process through the same wiring `certrot serve` uses.
    func startDaemon(
        configPath: String? = nil, clock: (@Sendable () -> Int64)? = nil,
        adjust: (inout DaemonSettings) -> Void = { _ in }
    ) throws {
        var settings = try DaemonSettings.resolve(try CertrotConfig.load(path: try configPath ?? writeConfig()))
        adjust(&settings)
        let daemon =
            clock.map { CertrotDaemon(settings: settings, logger: logger, clock: $0) }
            ?? CertrotDaemon(settings: settings, logger: logger)
        self.daemon = daemon
        daemonTask = Task { try await daemon.run() }
    }

    func stopDaemon() async {
        daemonTask?.cancel()
        _ = try? await daemonTask?.value
        daemonTask = nil
    }

    func fleetOptions(devices: Int) -> FleetOptions {
        var options = FleetOptions(host: broker.host, port: broker.port, devices: devices, keys: [key.publicKey])
        options.initial = [(42, 0, try! PEM.normalizeChain(oldCA.pem).bytes)]
        options.devicesPerConnection = 50
        options.offlineDelay = 2
        return options
    }

    func startFleet(_ options: FleetOptions) throws -> SimulatedFleet {
        let fleet = SimulatedFleet(options: options, logger: logger)
        try fleet.start()
        fleets.append(fleet)
        return fleet
    }

    func rpc() throws -> RPCClient {
        if let rpcClient { return rpcClient }
        let client = try RPCClient(host: broker.host, port: broker.port, logger: logger)
        rpcClient = client
        return client
    }

    /// A call to a daemon just started: asked again until it answers, for up to `within` seconds (a request
    /// published before the daemon subscribed is never answered, and a start under a loaded make test can take
    /// longer than one call's timeout).
    func firstResult(_ method: String, params: [String: Any] = [:], within: Double = 60) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(within)
        while true {
            do {
                return try await rpc().result(method, params: params, timeout: 5)
            } catch  where Date() < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Reads `read` every 100 ms until `done` holds of what it returned or `within` seconds pass, and returns the
    /// last value read (the caller's expectations then say what was wrong). A read that throws counts as nothing read.
    /// Waits are bounded by time, not by a number of tries: under a loaded make test a daemon can take well over
    /// ten seconds to start (CI failed a 100-tries wait for /readyz that way).
    func eventually<T>(
        within: Double = 60, _ read: () async throws -> T, until done: (T) -> Bool
    ) async throws -> T? {
        let deadline = Date().addingTimeInterval(within)
        var last: T?
        while Date() < deadline {
            if let value = try? await read() {
                last = value
                if done(value) { return value }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return last
    }

    /// Polls fleet.status until `done` says so, or fails after `timeout` seconds.
    @discardableResult
    func waitForFleet(timeout: Double = 60, _ done: ([String: Int]) -> Bool) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            if let status = try? await rpc().result("fleet.status", timeout: 1) {
                last = status
                if done((status["states"] as? [String: Int]) ?? [:]) { return status }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("fleet did not reach the expected state in \(timeout) s; last: \(last)")
        throw HarnessError.timeout
    }

    /// Polls device.status until `device`'s first rotation is `sent` and returns its bundle's jti (nil after
    /// `timeout` seconds).
    func sentBundle(of device: String, timeout: Double = 60) async throws -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let status = try? await rpc().result("device.status", params: ["device": device], timeout: 1)
            let rotation = (status?["rotations"] as? [[String: Any]])?.first
            if rotation?["state"] as? String == "sent", let jti = rotation?["jti"] as? String { return jti }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    func stop() async {
        rpcClient?.close()
        fleets.forEach { $0.stop() }
        await stopDaemon()
        broker.stop()
        try? FileManager.default.removeItem(at: dir)
    }

    enum HarnessError: Error { case timeout }
}

/// The certrot executable built next to the test bundle (or $CERTROT_BIN).
/// Waits (up to `timeout` seconds) until `log` holds `count` "certrot starting" lines, so that a kill test kills a
/// daemon that has started rather than one still loading its config on a busy machine.
func waitForStarts(_ log: String, count: Int, timeout: Double = 30) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if text.components(separatedBy: "certrot starting").count - 1 >= count { return }
        try await Task.sleep(for: .milliseconds(20))
    }
}

func certrotBinary() -> String {
    if let env = ProcessInfo.processInfo.environment["CERTROT_BIN"] { return env }
    let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var dir = testBinary.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("certrot").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return ".build/debug/certrot"
}

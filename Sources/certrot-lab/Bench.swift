import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotSimulator
import CertrotMQTT
import CertrotPKCS11
import CertrotServer
import CertrotStore
import CertrotTestSupport
import Foundation
import Logging
import Synchronization

/// `make bench`: certrot against the broker's own ceiling, on this machine. See docs/performance.md.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark: raw broker ceiling, certrot end to end, signing, memory, status latency, recovery.",
        discussion: """
            Everything on loopback: a mosquitto on a free port, the simulator in its own process (many devices per \
            MQTT connection), the daemon in its own process. Prints a table and writes JSON (--out). Build with \
            -c release for figures worth comparing (make bench does).
            """)

    @Option(help: "Simulated devices.") var devices: Int = 100_000
    @Option(help: "Devices per simulator MQTT connection.") var devicesPerConnection: Int = 1000
    @Option(help: "Where to write the results.") var out: String = "bench/results.json"
    @Option(help: "Seconds for the signing benchmark.") var signSeconds: Double = 3
    @Option(help: "Give up on a phase after this many seconds.") var timeout: Double = 1800
    @Flag(help: "Skip the SIGKILL/recovery phase.") var noRecovery = false
    @Flag(help: "Only the signing and issuance figures (3, 3b): no broker, no campaign.") var signingOnly = false
    @Option(
        help:
            "Also run the campaign on PostgreSQL, once per count given (comma-separated; 1: one daemon, no cluster; 0 or empty: skip)."
    )
    var replicas: String = ""
    @Option(
        help: """
            With --replicas, the kernel's autogroup setting for each of those phases in turn (comma-separated 0 or 1, \
            kernel.sched_autogroup_enabled; needs root; the machine's own setting is put back at the end): an A/B of \
            how the scheduler groups PostgreSQL's backends (docs/performance.md). Empty: as the machine has it.
            """)
    var autogroup: String = ""
    @Option(help: "Known-device counts for the memory phase (comma-separated; the store is filled directly).")
    var known: String = "100000,1000000"

    func run() async throws {
        let logger = makeStandardErrorLogger("certrot.bench", level: .error)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let oldCA = try CertificateFactory.rootCA(commonName: "Bench CA old", days: 20)
        let newCA = try CertificateFactory.rootCA(commonName: "Bench CA new", days: 730)
        try oldCA.pem.write(toFile: path("old.pem"), atomically: true, encoding: .utf8)
        try newCA.pem.write(toFile: path("new.pem"), atomically: true, encoding: .utf8)
        let newChain = try PEM.normalizeChain(newCA.pem)
        let key = SigningKey.generate()
        try KeyFile.write(key, to: path("key.pem"))
        var results: [String: Any] = [
            "devices": devices, "machine": machine(), "date": ISO8601DateFormatter().string(from: Date()),
            "build": isDebugBuild ? "debug" : "release",
        ]
        say(
            "certrot-lab bench: \(devices) devices, \(isDebugBuild ? "DEBUG build (figures not comparable)" : "release build")"
        )

        // 3. Signing, first: nothing else runs yet.
        let signing = signingBenchmark(key: key, chain: newChain)
        let ecdsa = ecdsaBenchmark(key: key)
        let opensslRates = opensslRates()
        let openssl = opensslRates?.sign
        results["signing"] = [
            "bundlesPerSecond": signing, "opensslSignPerSecond": openssl as Any,
            "ratio": openssl.map { signing / $0 } as Any, "swiftCryptoSignPerSecond": ecdsa,
        ]
        say(
            String(format: "signing     %.0f bundles/s on one core", signing)
                + (openssl.map {
                    String(format: "; openssl speed ecdsap256: %.0f sign/s; ratio %.2f", $0, signing / $0)
                } ?? "; openssl not found"))
        say(String(format: "            (of which ECDSA alone, swift-crypto P256 over 32 bytes: %.0f sign/s)", ecdsa))
        // Compact bundles (docs/protocol.md §12): the same bundles as COSE_Sign1, and their bytes on air.
        let compact = signingBenchmark(key: key, chain: newChain, compact: true)
        results["signingCompact"] = ["bundlesPerSecond": compact, "ratioToJWS": signing > 0 ? compact / signing : 0]
        say(
            String(
                format: "compact     %.0f COSE bundles/s on one core (%.2f × the JWS figure)", compact,
                signing > 0 ? compact / signing : 0))
        let onAir = bytesOnAir(key: key)
        if !onAir.isEmpty {
            results["bytesOnAir"] = onAir.map(\.json)
            say("bytes on air, one write bundle on nrf-352656100123456/certs (nrf91: 2,048-byte messages):")
            say("            chain                              PEM    DER    JWS  COSE  COSE-DER  COSE/PEM  COSE/JWS")
            for row in onAir { say(row.line) }
        }
        // The same bundles signed in a SoftHSM2 token (C_Sign through the PKCS#11 module), on 1, 2 and 4 threads.
        if let token = tokenSigningBenchmark(chain: newChain, fileRate: signing) {
            results["signingToken"] = token.json
            say(token.line)
        } else {
            say("token       SoftHSM2 not found (apt install softhsm2); token signing not measured")
        }
        // Client-certificate issuance (docs/protocol.md §11): each certificate costs two ECDSA verifications (the
        // CSR's proof of possession, the modem's attestation) and one signature.
        let issuance = try issuanceBenchmark()
        func ratio(_ value: Double) -> Any { openssl.map { value / $0 } as Any }
        results["issuance"] = [
            "certificatesPerSecond": issuance.whole, "checksPerSecond": issuance.checks,
            "issuingPerSecond": issuance.issuing, "issuingBeforePerSecond": issuance.issuingBefore,
            "opensslSignPerSecond": openssl as Any, "ratio": ratio(issuance.whole),
            "issuingRatio": ratio(issuance.issuing), "issuingBeforeRatio": ratio(issuance.issuingBefore),
            "issuingByKind": Dictionary(uniqueKeysWithValues: issuance.byKind.map { ($0.0.rawValue, $0.1) }),
        ]
        let versus = { (value: Double) in openssl.map { String(format: " (%.2f × openssl sign)", value / $0) } ?? "" }
        say(
            String(
                format: "issuance    %.0f client certificates/s on one core (CSR + attestation checked, signed, PEM)",
                issuance.whole) + versus(issuance.whole))
        say(String(format: "            issuing alone %.0f/s", issuance.issuing) + versus(issuance.issuing))
        say(
            String(format: "            issuing through swift-certificates' builder %.0f/s", issuance.issuingBefore)
                + versus(issuance.issuingBefore))
        say(String(format: "            checks alone (parse + 2 ECDSA verifications) %.0f/s", issuance.checks))
        // What the whole path could reach if its two verifications and its signature ran at OpenSSL's speed and
        // nothing else cost anything: the bound a ratio to openssl's sign/s meets.
        if let rates = opensslRates {
            let ceiling = 1 / (2 / rates.verify + 1 / rates.sign)
            results["issuanceCeiling"] = [
                "opensslVerifyPerSecond": rates.verify, "perSecond": ceiling, "ratioToSign": ceiling / rates.sign,
                "wholeToCeiling": issuance.whole / ceiling,
            ]
            say(
                String(
                    format:
                        "            openssl verify %.0f/s: 2 verifications + 1 signature at openssl's speed bound the "
                        + "whole path at %.0f/s (%.2f × openssl sign); certrot's whole path is %.2f × that bound",
                    rates.verify, ceiling, ceiling / rates.sign, issuance.whole / ceiling))
        }
        say(
            "            issuing alone under other CAs: "
                + issuance.byKind.map { "\($0.0.name) " + String(format: "%.0f/s", $0.1) }.joined(separator: ", "))

        if signingOnly { return try write(results) }

        let broker = try Broker()
        defer { broker.stop() }

        // 1. Raw ceiling: the same messages, answered by a trivial echo with bundles signed beforehand.
        let raw = try await rawCeiling(
            broker: broker, key: key, newChain: newChain, oldPath: path("old.pem"), keyPath: path("key.pem"),
            logger: logger, dir: dir)
        results["raw"] = ["devicesPerSecond": raw.rate, "seconds": raw.seconds]
        say(
            String(
                format: "raw         %.0f devices/s (%.1f s for %d devices: parts out, ack and inventory back)",
                raw.rate, raw.seconds, devices))

        // 2, 4, 5 and 6: certrot itself, on a fresh broker (the raw phase left retained inventories behind).
        broker.stop()
        let second = try Broker()
        defer { second.stop() }
        let e2e = try await endToEnd(broker: second, dir: dir, logger: logger)
        results["certrot"] = e2e.json.merging(["ratioToRaw": raw.rate > 0 ? e2e.rate / raw.rate : 0]) { $1 }
        say(
            String(
                format: "certrot     %.0f rotations/s (%.1f s from campaign.create to all verified); %.2f × raw",
                e2e.rate, e2e.seconds, raw.rate > 0 ? e2e.rate / raw.rate : 0))
        say(
            String(
                format: "memory      daemon RSS %.1f MB with %d devices known (%.0f bytes/device); peak %.1f MB",
                e2e.rssKnown / 1e6, devices, e2e.rssKnown / Double(devices), e2e.rssPeak / 1e6))
        say(
            String(
                format:
                    "status      device.status p50 %.1f ms p99 %.1f ms (%d calls); fleet.status p50 %.1f ms p99 %.1f ms (%d calls), during the campaign",
                e2e.latency["device.status"]?.p50 ?? 0, e2e.latency["device.status"]?.p99 ?? 0,
                e2e.latency["device.status"]?.n ?? 0,
                e2e.latency["fleet.status"]?.p50 ?? 0, e2e.latency["fleet.status"]?.p99 ?? 0,
                e2e.latency["fleet.status"]?.n ?? 0))
        if let recovery = e2e.recovery {
            say(String(format: "recovery    %.2f s from restart to the first new bundle", recovery))
            if let steps = e2e.recoverySteps { say("            the restarted daemon's account: \(steps)") }
        }

        // 2 again, on PostgreSQL: one daemon, or several replicas sharing the work (docs/scaling.md).
        let replicaCounts = replicas.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            .filter { $0 > 0 }
        if !replicaCounts.isEmpty {
            second.stop()
            let autogroups = try Autogroup.settings(autogroup, phases: replicaCounts.count)
            let machineAutogroup = Autogroup.current
            defer { if !autogroups.isEmpty, let machineAutogroup { try? Autogroup.set(machineAutogroup) } }
            var runs: [[String: Any]] = []
            var pooled: [String: [String: [Double]]] = [:]
            var phasesOf: [String: Int] = [:]
            for (phase, count) in replicaCounts.enumerated() {
                if phase < autogroups.count { try Autogroup.set(autogroups[phase]) }
                let grouping = Autogroup.current
                let broker = try Broker()
                defer { broker.stop() }
                let pg = try await postgresThroughput(replicas: count, broker: broker, dir: dir, logger: logger)
                runs.append(
                    pg.json.merging([
                        "ratioToRaw": raw.rate > 0 ? pg.rate / raw.rate : 0,
                        "ratioToSQLite": e2e.rate > 0 ? pg.rate / e2e.rate : 0,
                        "autogroup": grouping.map { $0 ? 1 : 0 } as Any,
                    ]) { $1 })
                let key =
                    "\(count) \(count == 1 ? "daemon" : "replicas"), autogroup \(grouping.map { $0 ? "1" : "0" } ?? "?")"
                phasesOf[key, default: 0] += 1
                for (method, latency) in pg.latency { pooled[key, default: [:]][method, default: []] += latency.values }
                say(
                    String(
                        format:
                            "postgres    %.0f rotations/s with %d %@ on PostgreSQL (%.1f s; autogroup %@); %.2f × SQLite's %.0f/s, %.2f × raw",
                        pg.rate, count, count == 1 ? "daemon" : "replicas", pg.seconds,
                        grouping.map { $0 ? "1" : "0" } ?? "?",
                        e2e.rate > 0 ? pg.rate / e2e.rate : 0, e2e.rate, raw.rate > 0 ? pg.rate / raw.rate : 0))
                say(
                    String(
                        format:
                            "            per rotation: %.1f statements, %.1f round trips, %.2f transactions, %.1f rows written, %.0f bytes of WAL; status p99: device %.1f ms, fleet %.1f ms",
                        pg.perRotation("calls"), pg.perRotation("round_trips"), pg.perRotation("commits"),
                        pg.perRotation("rows"),
                        pg.perRotation("walBytes"), pg.latency["device.status"]?.p99 ?? 0,
                        pg.latency["fleet.status"]?.p99 ?? 0))
            }
            results["postgres"] = runs
            // Phases of the same kind pooled: one phase's p99 is one of its three slowest calls.
            var pooledJSON: [String: Any] = [:]
            for (key, methods) in pooled.sorted(by: { $0.key < $1.key }) {
                let phases = phasesOf[key] ?? 0
                guard phases > 1 else { continue }
                let summary = methods.mapValues { Latency(values: $0) }
                pooledJSON[key] = summary.mapValues(\.json).merging(["phases": phases]) { $1 }
                say(
                    String(
                        format:
                            "pooled      %@, %d phases: status p99 device %.1f ms (%d calls, %d over 50 ms), fleet %.1f ms",
                        key, phases, summary["device.status"]?.p99 ?? 0, summary["device.status"]?.n ?? 0,
                        summary["device.status"]?.values.filter { $0 > 50 }.count ?? 0,
                        summary["fleet.status"]?.p99 ?? 0))
            }
            if !pooledJSON.isEmpty { results["postgresPooled"] = pooledJSON }
            if runs.contains(where: { $0["autogroup"] as? Int == 1 }) {
                say(
                    "note        autogroup was on (kernel.sched_autogroup_enabled): each PostgreSQL backend is a "
                        + "scheduling group of its own, and status reads wait for a core (docs/scaling.md)")
            }
        }

        // 4, continued: daemon memory with many devices known and nothing running, on a fresh broker.
        let counts = known.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        if !counts.isEmpty {
            second.stop()
            let third = try Broker()
            defer { third.stop() }
            var memory: [[String: Any]] = []
            let oldChain = try PEM.normalizeChain(oldCA.pem)
            for count in counts {
                let figures = try await memoryKnown(
                    count: count, broker: third, dir: dir, oldChain: oldChain, kid: key.kid, logger: logger)
                memory.append(figures.json)
                say(
                    String(
                        format:
                            "memory      %d devices known, idle: daemon RSS %.1f MB, peak %.1f MB (%.0f bytes/device at peak); fleet.status %.0f ms, device.status %.1f ms; store filled in %.0f s",
                        count, figures.rss / 1e6, figures.peak / 1e6, figures.peak / Double(count),
                        figures.fleetStatusMs, figures.deviceStatusMs, figures.seedSeconds))
            }
            results["memoryKnown"] = memory
        }

        try write(results)
    }

    func write(_ results: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
        let url = URL(fileURLWithPath: out)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
        say("written     \(out)")
    }

    var isDebugBuild: Bool {
        #if DEBUG
            true
        #else
            false
        #endif
    }

    func machine() -> [String: Any] {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }.map {
                String($0.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces)
            }
        return [
            "cores": ProcessInfo.processInfo.activeProcessorCount, "cpu": cpu ?? "unknown",
            "memoryBytes": ProcessInfo.processInfo.physicalMemory,
            "schedAutogroup": Autogroup.current.map { $0 ? 1 : 0 } as Any,
        ]
    }

    // MARK: 1. Raw ceiling

    func rawCeiling(
        broker: Broker, key: SigningKey, newChain: CertificateChain, oldPath: String, keyPath: String, logger: Logger,
        dir: URL
    ) async throws -> (rate: Double, seconds: Double) {
        let prefix = "raw-"
        // Bundles signed before the clock starts: the echo neither signs nor stores.
        var parts: [String: [[UInt8]]] = [:]
        parts.reserveCapacity(devices)
        for index in 1...devices {
            let id = "\(prefix)\(String(format: "%05d", index))"
            let claims = BundleClaims(
                sub: id, jti: "raw\(index)", iat: Int64(Date().timeIntervalSince1970),
                exp: Int64(Date().timeIntervalSince1970) + 86400,
                seq: 1, ops: [.write(tag: 42, type: 0, pem: newChain.pem)])
            parts[id] = try Parts.split(
                jws: try JWS.sign(claims, with: key), jti: claims.jti, topic: Topics.bundle(id), maxMessage: 2048)
        }
        let table = parts
        let target = newChain.sha256
        struct Progress {
            var first: Double?
            var done = 0
            var last: Double = 0
            var sent: Set<String> = []
        }
        let progress = Mutex(Progress())
        let finished = AsyncStream<Void>.makeStream()
        let echoBox = Mutex<MQTTClient?>(nil)
        let deviceCount = devices
        let echo = try MQTTClient(
            options: MQTTOptions(host: broker.host, port: broker.port, clientID: "bench-echo"), logger: logger
        ) { event in
            switch event {
            case .connected:
                _ = try? echoBox.withLock { try $0?.subscribe([Topics.inventoryFilter, Topics.ackFilter]) }
            case .message(let message):
                guard case .inventory(let device) = Topics.classify(message.topic),
                    let inventory = try? Inventory.parse(message.payload)
                else { return }
                let now = Date().timeIntervalSince1970
                if inventory.credential(tag: 42, type: 0)?.sha256 == target {
                    let done = progress.withLock { p -> Int in
                        p.done += 1
                        p.last = now
                        return p.done
                    }
                    if done == deviceCount { finished.continuation.finish() }
                } else if let bundle = table[device] {
                    let first = progress.withLock { p -> Bool in
                        if p.first == nil { p.first = now }
                        return p.sent.insert(device).inserted
                    }
                    guard first else { return }
                    echoBox.withLock { client in
                        for part in bundle { _ = try? client?.publish(topic: Topics.bundle(device), payload: part) }
                    }
                }
            default: break
            }
        }
        echoBox.withLock { $0 = echo }
        try echo.start()
        defer { echo.stop() }
        try await Task.sleep(for: .milliseconds(300))
        let simulator = try startSimulator(broker: broker, prefix: prefix, oldPath: oldPath, keyPath: keyPath, dir: dir)
        defer { simulator.terminate(grace: 2) }
        try await waitOrTimeout(finished.stream)
        let (first, last) = progress.withLock { ($0.first ?? 0, $0.last) }
        let seconds = max(0.001, last - first)
        return (Double(devices) / seconds, seconds)
    }

    func startSimulator(
        broker: Broker, prefix: String, oldPath: String, keyPath: String, dir: URL
    ) throws -> ChildProcess {
        try ChildProcess(
            executable: certrotExecutable(),
            arguments: [
                "simulate", "--broker", broker.url, "--devices", "\(devices)", "--pubkey", keyPath, "--chain", oldPath,
                "--id-prefix", prefix, "--devices-per-connection", "\(devicesPerConnection)", "--log-level", "error",
            ],
            outputPath: dir.appendingPathComponent("simulator-\(prefix)log").path)
    }

    func waitOrTimeout(_ stream: AsyncStream<Void>) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        let timer = Task {
            while Date() < deadline, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(200)) }
        }
        defer { timer.cancel() }
        for await _ in stream {}
        if Date() >= deadline { throw ValidationError("timed out after \(Int(timeout)) s") }
    }

    // MARK: 2, 4, 5, 6. certrot end to end

    struct EndToEnd {
        var rate: Double
        var seconds: Double
        var rssKnown: Double
        var rssPeak: Double
        var latency: [String: Latency]
        var recovery: Double?
        /// What the restarted daemon logged of its start (``StartupTimes``): seconds after exec at each step.
        var recoverySteps: String?

        var json: [String: Any] {
            var object: [String: Any] = [
                "rotationsPerSecond": rate, "seconds": seconds, "rssBytesKnown": rssKnown, "rssPeakBytes": rssPeak,
                "latencyMs": latency.mapValues(\.json),
            ]
            object["recoverySeconds"] = recovery
            object["recoverySteps"] = recoverySteps
            return object
        }
    }

    /// A campaign over every device, from `campaign.create` to every member verified, with `device.status` and
    /// `fleet.status` issued one after the other (then 100 ms) all through: seconds, and p50/p99 per method.
    func campaignWithLatency(
        _ rpc: RPCClient, name: String, chain: String, prefix: String
    ) async throws -> (seconds: Double, latency: [String: Latency]) {
        _ = try await createCampaign(rpc, name: name, chain: chain)
        let began = Date()
        var samples: [String: [Double]] = ["device.status": [], "fleet.status": []]
        var verified = 0
        var index = 1
        while verified < devices {
            guard Date().timeIntervalSince(began) < timeout else {
                throw ValidationError("campaign \(name) not done within \(Int(timeout)) s")
            }
            for method in ["device.status", "fleet.status"] {
                let params: [String: Any] =
                    method == "device.status" ? ["device": prefix + String(format: "%05d", index)] : [:]
                // A call that times out counts with its full 10 s wait (a lower bound of its latency); one that is
                // answered with an error fails the run (a quick error must not pass for a quick answer).
                let start = Date()
                var answer: [String: Any]?
                do {
                    answer = try await rpc.result(method, params: params, timeout: 10)
                } catch let failure as RPCClient.Failure where failure.message.hasPrefix("no reply") {
                    answer = nil
                }
                samples[method]?.append(Date().timeIntervalSince(start) * 1000)
                guard method == "fleet.status" || answer?["device"] != nil || answer == nil else {
                    throw ValidationError("device.status answered without the device: \(answer ?? [:])")
                }
                if method == "fleet.status", let states = answer?["campaignStates"] as? [String: Int] {
                    verified = states["verified"] ?? 0
                }
            }
            index = index % devices + 1
            try await Task.sleep(for: .milliseconds(100))
        }
        let seconds = Date().timeIntervalSince(began)
        return (seconds, samples.filter { !$0.value.isEmpty }.mapValues { Latency(values: $0) })
    }

    /// One method's status latency over a phase (ms): p50, p99, the number of calls, and the ten slowest calls,
    /// slowest first (with 100–300 calls a phase p99 is one of its three slowest: the ten let phases be pooled).
    struct Latency {
        /// Every call's, sorted.
        var values: [Double]

        init(values: [Double]) { self.values = values.sorted() }

        var n: Int { values.count }
        var p50: Double { values.isEmpty ? 0 : values[values.count / 2] }
        var p99: Double { values.isEmpty ? 0 : values[min(values.count - 1, Int(Double(values.count) * 0.99))] }
        var worst: [Double] { Array(values.suffix(10).reversed()) }

        var json: [String: Any] { ["p50": p50, "p99": p99, "samples": n, "worst": worst] }
    }

    /// `kernel.sched_autogroup_enabled`: with it, Linux schedules each session as a group of its own. PostgreSQL's
    /// every backend starts a session of its own, so each is a group that competes with whole sessions of
    /// threads (the replicas, the broker and the simulator, here one) — docs/performance.md.
    enum Autogroup {
        static let path = "/proc/sys/kernel/sched_autogroup_enabled"

        /// Nil where the kernel has no autogroup.
        static var current: Bool? {
            (try? String(contentsOfFile: path, encoding: .utf8)).map {
                $0.trimmingCharacters(in: .whitespacesAndNewlines) != "0"
            }
        }

        static func set(_ enabled: Bool) throws {
            guard FileManager.default.isWritableFile(atPath: path) else {
                throw ValidationError("--autogroup: \(path) is not writable (needs root)")
            }
            try (enabled ? "1\n" : "0\n").write(toFile: path, atomically: false, encoding: .utf8)
        }

        /// `--autogroup` for `phases` phases: empty, or one 0/1 for each.
        static func settings(_ option: String, phases: Int) throws -> [Bool] {
            let values = option.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard !values.isEmpty else { return [] }
            guard values.count == phases, values.allSatisfy({ $0 == "0" || $0 == "1" }) else {
                throw ValidationError("--autogroup wants one 0 or 1 for each of the \(phases) --replicas phases")
            }
            guard current != nil else { throw ValidationError("--autogroup: this kernel has no \(path)") }
            return values.map { $0 == "1" }
        }
    }

    func endToEnd(broker: Broker, dir: URL, logger: Logger) async throws -> EndToEnd {
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let config = """
            broker: {url: \(broker.url), clientId: certrot-bench}
            store: sqlite:\(path("certrot.db"))
            signingKey: \(path("key.pem"))
            ackTimeout: 120s
            targets: []
            catalogue: [{name: old, chain: \(path("old.pem"))}]
            """
        try config.write(toFile: path("certrot.yaml"), atomically: true, encoding: .utf8)
        var daemonLog = ""
        func startDaemon() throws -> ChildProcess {
            daemonLog = path("daemon-\(UUID().uuidString.prefix(4)).log")
            return try serve(config: path("certrot.yaml"), log: daemonLog)
        }
        var daemon = try startDaemon()
        defer { daemon.terminate(grace: 5) }
        let simulator = try startSimulator(
            broker: broker, prefix: "dev-", oldPath: path("old.pem"), keyPath: path("key.pem"), dir: dir)
        defer { simulator.terminate(grace: 2) }
        let rpc = try RPCClient(host: broker.host, port: broker.port, logger: logger)
        defer { rpc.close() }
        try await waitForDevices(rpc)
        try await Task.sleep(for: .seconds(2))
        let rssKnown = Double(Self.rss(pid: daemon.pid).current)

        let (seconds, latency) = try await campaignWithLatency(
            rpc, name: "bench", chain: try String(contentsOfFile: path("new.pem"), encoding: .utf8), prefix: "dev-")
        var result = EndToEnd(
            rate: Double(devices) / seconds, seconds: seconds, rssKnown: rssKnown,
            rssPeak: Double(Self.rss(pid: daemon.pid).peak),
            latency: latency, recovery: nil)

        // 6. Recovery: another campaign, the daemon SIGKILLed half-way, then restarted.
        if !noRecovery {
            (result.recovery, result.recoverySteps) = try await recovery(
                rpc, broker: broker, daemon: &daemon, restart: startDaemon, log: { daemonLog }, logger: logger)
        }
        return result
    }
}

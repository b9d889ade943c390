import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotStore
import CertrotTestSupport
import Foundation
import Logging
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The benchmark's memory and PostgreSQL phases, and what the phases share.
extension Bench {
    // MARK: 4. Memory with many devices known

    struct Known {
        var devices: Int
        var seedSeconds: Double
        var rss: Double
        var peak: Double
        var fleetStatusMs: Double
        var deviceStatusMs: Double
        var json: [String: Any] {
            [
                "devices": devices, "rssBytes": rss, "rssPeakBytes": peak, "peakBytesPerDevice": peak / Double(devices),
                "seedSeconds": seedSeconds, "fleetStatusMs": fleetStatusMs, "deviceStatusMs": deviceStatusMs,
            ]
        }
    }

    /// Daemon RSS with `count` devices known and no campaign running: the SQLite store is filled directly (each
    /// device with an inventory — one credential, one trusted key — and an expiry row, as after its first
    /// inventory), the daemon started on it with one configured target, asked for `fleet.status` and one
    /// `device.status`, then measured. certrot keeps no per-device state in memory: what grows is the store.
    func memoryKnown(
        count: Int, broker: Broker, dir: URL, oldChain: CertificateChain, kid: String, logger: Logger
    ) async throws -> Known {
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let db = path("known-\(count).db")
        let seeding = Date()
        let store = try SQLiteStore(path: db)
        let now = Int64(Date().timeIntervalSince1970)
        let inventory = Inventory(
            seq: 0, maxMessage: 2048,
            creds: [.init(tag: 42, type: 0, sha256: oldChain.sha256, notAfter: oldChain.notAfter)],
            keys: [kid])
        var next = 0
        while next < count {
            let end = min(count, next + 20_000)
            try store.write { tx in
                for index in next..<end {
                    let id = "mem-\(String(format: "%07d", index))"
                    try tx.saveDevice(
                        DeviceRecord(id: id, firstSeen: now, lastSeen: now, inventory: inventory, issuedSeq: 0))
                    try tx.saveExpiry(device: id, target: "ca", notAfter: oldChain.notAfter)
                }
            }
            next = end
        }
        store.close()  // the daemon must be the store's only process
        let seedSeconds = Date().timeIntervalSince(seeding)
        let config = """
            broker: {url: \(broker.url), clientId: certrot-mem-\(count)}
            store: sqlite:\(db)
            signingKey: \(path("key.pem"))
            targets: [{name: ca, tag: 42, type: 0, chain: \(path("new.pem"))}]
            catalogue: [{name: old, chain: \(path("old.pem"))}]
            """
        try config.write(toFile: path("known-\(count).yaml"), atomically: true, encoding: .utf8)
        let daemon = try serve(config: path("known-\(count).yaml"), log: path("known-\(count).log"))
        defer { daemon.terminate(grace: 5) }
        let rpc = try RPCClient(host: broker.host, port: broker.port, logger: logger)
        defer { rpc.close() }
        // Until the daemon has subscribed, a request goes nowhere: ask briefly until one is answered.
        let started = Date()
        let probe = ["device": "mem-\(String(format: "%07d", count / 2))"]
        while (try? await rpc.result("device.status", params: probe, timeout: 1)) == nil {
            guard Date().timeIntervalSince(started) < timeout else {
                throw ValidationError("the daemon did not answer for \(count) devices")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        var asked = Date()
        let status = try await rpc.result("fleet.status", timeout: timeout)
        let fleetStatusMs = Date().timeIntervalSince(asked) * 1000
        guard status["devices"] as? Int == count else {
            throw ValidationError("fleet.status counts \(status["devices"] ?? "?") devices, not \(count)")
        }
        asked = Date()
        _ = try await rpc.result("device.status", params: probe, timeout: 30)
        let deviceStatusMs = Date().timeIntervalSince(asked) * 1000
        try await Task.sleep(for: .seconds(2))
        let (rss, peak) = Self.rss(pid: daemon.pid)
        return Known(
            devices: count, seedSeconds: seedSeconds, rss: Double(rss), peak: Double(peak),
            fleetStatusMs: fleetStatusMs,
            deviceStatusMs: deviceStatusMs)
    }

    /// `certrot serve` (this binary) in a process of its own, logging notices and above (its account of a start).
    func serve(config: String, log: String) throws -> ChildProcess {
        try ChildProcess(
            executable: certrotExecutable(), arguments: ["serve", "--config", config, "--log-level", "notice"],
            outputPath: log)
    }

    /// A campaign writing `chain` to tag 42 of every device, at `rate` bundles/s (nil: no limit); its id.
    func createCampaign(_ rpc: RPCClient, name: String, chain: String, rate: Double? = nil) async throws -> String {
        var params: [String: Any] = ["name": name, "targets": [["tag": 42, "chain": chain]], "select": ["all": true]]
        params["rate"] = rate
        let created = try await rpc.result("campaign.create", params: params, timeout: 120)
        guard let id = created["id"] as? String else { throw ValidationError("campaign.create failed: \(created)") }
        return id
    }

    /// Until the daemon (or one of the replicas) answers that it knows every device.
    func waitForDevices(_ rpc: RPCClient) async throws {
        let start = Date()
        while (try? await rpc.result("fleet.status", timeout: 2))?["devices"] as? Int != devices {
            guard Date().timeIntervalSince(start) < timeout else {
                throw ValidationError("devices not seen within \(Int(timeout)) s")
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    /// A PostgreSQL phase's figures: the campaign's rate and status latency, and what the server counted for it
    /// (pg_stat_statements over the campaign: statements, rows, WAL; commits).
    struct PostgresRun {
        var replicas: Int
        var rate: Double
        var seconds: Double
        var latency: [String: Latency]
        var server: [String: Double]
        var devices: Int

        func perRotation(_ name: String) -> Double { (server[name] ?? 0) / Double(max(1, devices)) }

        var json: [String: Any] {
            [
                "replicas": replicas, "rotationsPerSecond": rate, "seconds": seconds,
                "latencyMs": latency.mapValues(\.json),
                "server": server,
                "perRotation": Dictionary(uniqueKeysWithValues: server.keys.map { ($0, perRotation($0)) }),
            ]
        }
    }

    /// A campaign over every device with the daemon on PostgreSQL: one daemon (`replicas` = 1) or that many
    /// replicas in a cluster. From campaign.create to every device verified.
    func postgresThroughput(replicas: Int, broker: Broker, dir: URL, logger: Logger) async throws -> PostgresRun {
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let server = try PostgresServer.shared()
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last ?? "")
        let statements = server.hasStatementStatistics
        if statements { try server.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database: database) }
        var daemons: [ChildProcess] = []
        defer { for daemon in daemons { daemon.terminate(grace: 5) } }
        let prefix = "pg\(replicas)-"
        var metricsPorts: [Int32] = []
        for index in 1...replicas {
            var config = """
                broker: {url: \(broker.url), clientId: certrot-bench-pg}
                store: \(url)
                signingKey: \(path("key.pem"))
                ackTimeout: 120s
                targets: []
                catalogue: [{name: old, chain: \(path("old.pem"))}]
                """
            if replicas > 1 { config += "\ncluster: {replica: r\(index)}\n" }
            let port = try Broker.freePort()
            metricsPorts.append(port)
            config += "\nhttp: {host: 127.0.0.1, port: \(port)}\n"
            try config.write(toFile: path("pg\(replicas)-\(index).yaml"), atomically: true, encoding: .utf8)
            daemons.append(
                try serve(config: path("pg\(replicas)-\(index).yaml"), log: path("pg\(replicas)-\(index).log")))
        }
        let simulator = try startSimulator(
            broker: broker, prefix: prefix, oldPath: path("old.pem"), keyPath: path("key.pem"), dir: dir)
        defer { simulator.terminate(grace: 2) }
        let rpc = try RPCClient(host: broker.host, port: broker.port, logger: logger)
        defer { rpc.close() }
        try await waitForDevices(rpc)
        func counters() throws -> [String: Double] {
            let totals = try server.psql(
                """
                SELECT xact_commit || ' ' || (tup_inserted + tup_updated + tup_deleted) FROM pg_stat_database
                WHERE datname = current_database()
                """, database: database
            ).split(separator: " ").map { Double($0) ?? 0 }
            var figures: [String: Double] = [:]
            if totals.count == 2 { (figures["commits"], figures["rows"]) = (totals[0], totals[1]) }
            if statements {
                let row = try server.psql(
                    """
                    SELECT COALESCE(SUM(calls), 0) || ' ' || COALESCE(SUM(wal_bytes), 0) FROM pg_stat_statements
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                    """, database: database
                ).split(separator: " ").map { Double($0) ?? 0 }
                if row.count == 2 { (figures["calls"], figures["walBytes"]) = (row[0], row[1]) }
            }
            return figures
        }
        // The server's statistics arrive a moment late (pg_stat_database is flushed about once a second).
        try await Task.sleep(for: .seconds(2))
        let before = try counters()
        let daemonsBefore = await daemonTraffic(metricsPorts)
        let (seconds, latency) = try await campaignWithLatency(
            rpc, name: "bench-pg\(replicas)", chain: try String(contentsOfFile: path("new.pem"), encoding: .utf8),
            prefix: prefix)
        try await Task.sleep(for: .seconds(2))
        let after = try counters()
        let traffic = await daemonTraffic(metricsPorts).merging(daemonsBefore) { $0 - $1 }
        return PostgresRun(
            replicas: replicas, rate: Double(devices) / seconds, seconds: seconds, latency: latency,
            server: after.merging(before) { $0 - $1 }.merging(traffic) { $1 }, devices: devices)
    }

    /// What the daemons counted of their own store traffic (`certrot_store_statements`, `…_round_trips`), summed
    /// over the replicas.
    func daemonTraffic(_ ports: [Int32]) async -> [String: Double] {
        var sums: [String: Double] = [:]
        for port in ports {
            guard let url = URL(string: "http://127.0.0.1:\(port)/metrics"),
                let (data, _) = try? await URLSession.shared.data(from: url)
            else { continue }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n")
            where line.hasPrefix("certrot_store_round_trips ") || line.hasPrefix("certrot_store_statements ") {
                let parts = line.split(separator: " ")
                sums[String(parts[0].dropFirst("certrot_store_".count)), default: 0] += Double(parts[1]) ?? 0
            }
        }
        return sums
    }

    /// VmRSS and VmHWM of a process, in bytes.
    static func rss(pid: pid_t) -> (current: Int, peak: Int) {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }
}

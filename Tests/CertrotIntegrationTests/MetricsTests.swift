import CertrotCore
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite(.serialized) struct MetricsTests {
    func get(_ port: Int32, _ path: String) async throws -> (status: Int, body: String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    func value(_ metrics: String, _ line: String) -> Double? {
        metrics.split(separator: "\n").first { $0.hasPrefix(line + " ") }.flatMap {
            Double($0.split(separator: " ").last!)
        }
    }

    @Test func metricsHealthAndReadiness_followARealRotation() async throws {
        let harness = try Harness()
        let port = try Broker.freePort()
        let config = try harness.writeConfig()
        try (try String(contentsOfFile: config, encoding: .utf8) + "\nhttp: {host: 127.0.0.1, port: \(port)}\n")
            .write(toFile: config, atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: config)
        let ready = try await harness.eventually({ try await get(port, "/readyz") }, until: { $0.status == 200 })
        #expect(ready?.status == 200, "\(String(describing: ready))")
        #expect(try await get(port, "/healthz").status == 200)
        let before = try await get(port, "/metrics").body
        #expect(value(before, "certrot_bundles_signed_total") ?? 0 == 0)
        // Devices start on the old CA (20 days left); one of them rejects, so it keeps the old CA.
        var options = harness.fleetOptions(devices: 10)
        options.behaviours[options.deviceID(1)] = DeviceBehaviour(rejects: true)
        let fleet = try harness.startFleet(options)

        _ = fleet
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 9 && ($0["rejected"] ?? 0) == 1 }
        let metrics = try await get(port, "/metrics").body
        #expect(value(metrics, "certrot_bundles_signed_total") == 10)
        #expect(value(metrics, "certrot_parts_published_total") ?? 0 >= 10)
        #expect(value(metrics, #"certrot_acks_total{status="applied"}"#) == 9)
        #expect(value(metrics, #"certrot_acks_total{status="rejected"}"#) == 1)
        #expect(value(metrics, #"certrot_rotations{target="broker-ca",state="verified"}"#) == 9)
        #expect(value(metrics, #"certrot_rotations{target="broker-ca",state="rejected"}"#) == 1)
        #expect(value(metrics, #"certrot_rotation_transitions_total{target="broker-ca",state="verified"}"#) == 9)
        #expect(value(metrics, "certrot_devices") == 10)
        #expect(value(metrics, "certrot_broker_connected") == 1)
        #expect(metrics.contains("certrot_store_write_duration_seconds"))
        #expect(value(metrics, #"certrot_rotation_phase_duration_seconds_count{phase="applied_to_verified"}"#) == 9)
        // The rejecting device still holds the old CA (20 days left); the others hold the new one (700 days).
        #expect(value(metrics, #"certrot_credential_days_left_bucket{target="broker-ca",le="7"}"#) == 0)
        #expect(value(metrics, #"certrot_credential_days_left_bucket{target="broker-ca",le="30"}"#) == 1)
        #expect(value(metrics, #"certrot_credential_days_left_bucket{target="broker-ca",le="365"}"#) == 1)
        #expect(value(metrics, #"certrot_credential_days_left_bucket{target="broker-ca",le="+Inf"}"#) == 10)
        #expect(value(metrics, #"certrot_expiring_without_successor{target="broker-ca"}"#) == 0)
        #expect(
            value(metrics, #"certrot_target_not_after_timestamp_seconds{target="broker-ca"}"#)
                == Double(harness.newChain.notAfter))

        // The broker goes away: not ready, and it says why; still alive.
        harness.broker.stop()
        let notReady = try await harness.eventually({ try await get(port, "/readyz") }, until: { $0.status == 503 })
        #expect(notReady?.status == 503)
        #expect(notReady?.body.contains("broker") == true)
        #expect(try await get(port, "/healthz").status == 200)
        await harness.stop()
    }

    @Test func credentialsDueForRenewal_withNoSuccessor_countAsExpiringWithoutSuccessor() async throws {
        let harness = try Harness()
        let shortLived = try CertificateFactory.rootCA(commonName: "Short-lived CA", days: 10)
        try shortLived.pem.write(toFile: harness.path("new-ca.pem"), atomically: true, encoding: .utf8)
        let port = try Broker.freePort()
        // Renew 30 days ahead: every device that takes the 10-day CA is due at once, and there is no successor.
        let config = try harness.writeConfig(
            targets: "\n  - {name: broker-ca, tag: 42, type: 0, chain: \(harness.path("new-ca.pem")), renewBefore: 30d}"
        )
        try (try String(contentsOfFile: config, encoding: .utf8) + "\nhttp: {port: \(port)}\n")
            .write(toFile: config, atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: config)
        _ = try harness.startFleet(harness.fleetOptions(devices: 4))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 4 }
        let metrics = try await get(port, "/metrics").body
        #expect(value(metrics, #"certrot_expiring_without_successor{target="broker-ca"}"#) == 4)
        #expect(value(metrics, #"certrot_credential_days_left_bucket{target="broker-ca",le="30"}"#) == 4)
        #expect(value(metrics, #"certrot_credential_days_left_bucket{target="broker-ca",le="7"}"#) == 0)
        await harness.stop()
    }

    @Test func campaignProgress_isExportedByState() async throws {
        let harness = try Harness()
        let port = try Broker.freePort()
        let config = try harness.writeConfig(
            targets: CampaignTests.noTargets, extra: "http: {host: 127.0.0.1, port: \(port)}")
        try harness.startDaemon(configPath: config)
        var options = harness.fleetOptions(devices: 6)
        options.behaviours[options.deviceID(1)] = DeviceBehaviour(rejects: true)
        _ = try harness.startFleet(options)
        let campaigns = CampaignTests()
        try await campaigns.waitForDevices(harness, count: 6)
        let id = try await campaigns.create(
            harness,
            ["name": "metered", "targets": [campaigns.target(harness)], "select": ["all": true], "minExecuted": 100])
        try await campaigns.waitFor(harness, id) {
            campaigns.states($0)["verified"] == 5 && campaigns.states($0)["rejected"] == 1
        }
        let metrics = try await get(port, "/metrics").body
        func sample(_ name: String, _ labels: [String]) -> Double? {
            metrics.split(separator: "\n").first { line in
                line.hasPrefix(name + "{") && labels.allSatisfy { line.contains($0) }
            }.flatMap { Double($0.split(separator: " ").last!) }
        }
        #expect(sample("certrot_campaign_devices", ["campaign=\"\(id)\"", "state=\"verified\""]) == 5)
        #expect(sample("certrot_campaign_devices", ["campaign=\"\(id)\"", "state=\"rejected\""]) == 1)
        #expect(sample("certrot_campaign_devices", ["campaign=\"\(id)\"", "state=\"waiting\""]) == 0)
        let running = sample("certrot_campaign_state", ["campaign=\"\(id)\"", "state=\"running\""]) ?? 0
        let paused = sample("certrot_campaign_state", ["campaign=\"\(id)\"", "state=\"paused\""]) ?? 0
        #expect(running + paused == 1, "one state is current")
        await harness.stop()
    }

    /// `rpc.slowReadMilliseconds`: a status read over it is logged with where its time went (0: every read), so an
    /// operator can tell a read that waited for the store from one that waited for the daemon's reads thread.
    @Test func aStatusReadOverTheSlowReadThreshold_isLogged_withWhereItsTimeWent() async throws {
        let harness = try Harness()
        let (serve, log) = try await harness.serveProcess(
            config: try harness.writeConfig(extra: "rpc: {slowReadMilliseconds: 0}"), logLevel: "notice")
        defer { serve.terminate() }
        let rpc = try harness.rpc()
        _ = try? await rpc.call("device.status", params: ["device": "probe-7"], timeout: 2)
        var line: Substring?
        for _ in 0..<50 where line == nil {
            line = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").first {
                $0.contains("slow status read") && $0.contains("device=probe-7")
            }
            if line == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let logged = try #require(line, "a read over 0 ms is logged")
        for field in ["method=device.status", "queued_ms=", "read_ms=", "publish_ms="] {
            #expect(logged.contains(field), "\(field) in \(logged)")
        }
        // A device with a newline in it is logged escaped: it cannot start a forged log line.
        _ = try await rpc.call("device.status", params: ["device": "x\nforged=1"], timeout: 5)
        let escaped = #"device="x\nforged=1""#
        var text = ""
        for _ in 0..<50 where !text.contains(escaped) {
            try await Task.sleep(for: .milliseconds(100))
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        }
        #expect(text.contains(escaped))
        #expect(!text.split(separator: "\n").contains { $0.hasPrefix("forged=1") })

        let bad = try harness.writeConfig(extra: "rpc: {slowReadMilliseconds: -1}")
        #expect(throws: CertrotError.self) { try DaemonSettings.resolve(try CertrotConfig.load(path: bad)) }
        await harness.stop()
    }

    /// A start says where its time went (an operator asking why a restart was slow; the bench's recovery figure):
    /// each step at its seconds after exec, in order, once connected; then when the first bundle part went out.
    @Test func aStart_logsWhereItsTimeWent_untilTheFirstBundlePart() async throws {
        let harness = try Harness()
        let (serve, log) = try await harness.serveProcess(config: try harness.writeConfig(), logLevel: "notice")
        defer { serve.terminate() }
        _ = try harness.startFleet(harness.fleetOptions(devices: 2))
        let marks = ["started (seconds after exec)", "first bundle part published", "store integrity check"]
        let lines =
            try await harness.eventually({
                (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n").filter { line in
                    marks.contains { line.contains($0) }
                }
            }) { $0.count == 3 } ?? []
        try #require(lines.count == 3, "\(lines)")
        let started = String(try #require(lines.first { $0.contains(marks[0]) }))
        // config read 0.081 s, store opened 0.094 s, campaigns loaded …, broker connected …
        let steps = ["config read", "store opened", "campaigns loaded", "broker connected"]
        var seconds: [Double] = []
        for step in steps {
            let range = try #require(started.range(of: step), "\(step) in \(started)")
            let rest = started[range.upperBound...].drop { $0 == " " }
            seconds.append(try #require(Double(rest.prefix { $0.isNumber || $0 == "." }), "\(started)"))
        }
        // The store's integrity check ran beside the start, and passed.
        #expect(lines.contains { $0.contains("store integrity check (quick_check) passed in") })
        #expect(seconds == seconds.sorted(), "\(started)")
        #expect(seconds[0] > 0 && seconds[3] < 60, "\(started)")
        let published = try #require(lines.first { $0.contains(marks[1]) })
        let first = try #require(
            published.range(of: "published ").map { Double(published[$0.upperBound...].prefix { $0 != " " }) } ?? nil)
        #expect(first >= seconds[3], "\(published)")
        // What came between the connection and that part: the batch that queued it, committed before it went out.
        #expect(published.contains("first batch with parts committed ("), "\(published)")
        await harness.stop()
    }
}

import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// The alert rules certrot ships (deploy/prometheus/certrot-alerts.yml): valid (`promtool check rules`), doing
/// what their unit tests say (`promtool test rules`), and written against series a running daemon really exposes:
/// every `certrot_*` series the rules and their tests use, with its label keys, is in a scrape of `/metrics`.
@Suite(.serialized) struct AlertRulesTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy/prometheus").path

    /// `name{key="value",…}` → the name and its label keys (without `job` and `instance`, which Prometheus adds).
    static func series(_ text: String) -> [(name: String, keys: Set<String>)] {
        let pattern = /(certrot_[a-z_]+)(\{[^}]*\})?/
        return text.matches(of: pattern).map { match in
            let labels = match.output.2.map(String.init) ?? ""
            let keys = labels.matches(of: /([a-z_]+)\s*=/).map { String($0.output.1) }
            return (String(match.output.1), Set(keys).subtracting(["job", "instance"]))
        }
    }

    @Test func theAlertRules_areValid_passTheirTests_andUseSeriesTheDaemonExposes() async throws {
        let rules = Self.directory + "/certrot-alerts.yml"
        let tests = Self.directory + "/certrot-alerts.test.yml"
        let check = try await HTTPAPITests.runOffThePool("/usr/bin/env", ["promtool", "check", "rules", rules])
        #expect(check.status == 0, "promtool check rules (Debian's prometheus package):\n\(check.output)")
        // promtool reads the test's rule_files relative to the test file.
        let unit = try await HTTPAPITests.runOffThePool("/usr/bin/env", ["promtool", "test", "rules", tests])
        #expect(unit.status == 0, "promtool test rules:\n\(unit.output)")

        // A daemon with a client-certificate policy (an issuer and its CRL), scraped.
        let h = try Harness()
        let lab = try ClientIdentityLab(dir: h.dir.appendingPathComponent("identities"), devices: [])
        let port = try Broker.freePort()
        let config = try h.writeConfig(
            extra: lab.yaml(caChain: "broker-ca") + "\nhttp: {host: 127.0.0.1, port: \(port)}")
        try h.startDaemon(configPath: config)
        // Two devices, and a campaign for them scheduled for later, for the campaign series.
        _ = try h.startFleet(h.fleetOptions(devices: 2))
        try await h.waitForFleet { ($0["verified"] ?? 0) == 2 }
        _ = try await h.rpc().result(
            "campaign.create",
            params: [
                "name": "later", "targets": [["tag": 43, "credential": "new-ca"]], "select": ["all": true],
                "start": Int(Date().timeIntervalSince1970) + 3600,
            ])
        var scrape = ""
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            scrape = (try? await MetricsTests().get(port, "/metrics").body) ?? ""
            if scrape.contains("certrot_crl_next_update_timestamp_seconds"), scrape.contains("certrot_campaign_state") {
                break
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        await h.stop()
        // Each sample line of the scrape: its name and label keys.
        var exposed: [String: [Set<String>]] = [:]
        for line in scrape.split(separator: "\n") where line.hasPrefix("certrot_") {
            for (name, keys) in Self.series(String(line.split(separator: " ").first ?? "")) {
                exposed[name, default: []].append(keys)
            }
        }
        for path in [rules, tests] {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            for (name, keys) in Self.series(text) {
                let shapes = exposed[name]
                #expect(
                    shapes != nil, "\(name) (in \(URL(fileURLWithPath: path).lastPathComponent)) is not in /metrics")
                // A selector may name fewer labels than a series has; a test series must have exactly its labels.
                if let shapes {
                    let fits = path == tests ? shapes.contains(keys) : shapes.contains { keys.isSubset(of: $0) }
                    #expect(fits, "\(name) with labels \(keys.sorted()) is not how /metrics shows it: \(shapes)")
                }
            }
        }
    }
}

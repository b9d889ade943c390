import CertrotCore
import CertrotStore
import CertrotTestSupport
import Crypto
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The operator console in a real headless Chromium (Selenium, Tests/console/console_test.py) against a daemon
/// with a running campaign: the pages load without console errors, a wave's bar advances live, a device search
/// finds a device, a pause without the token is refused and one with it pauses the campaign, phone width works.
/// The screenshots go to CERTROT_SCREENSHOTS (docs/console with `make screenshots`), else a temporary folder.
@Suite(.serialized) struct ConsoleTests {
    @Test func aRealBrowser_seesTheFleet_followsAWave_findsADevice_andPausesWithTheToken() async throws {
        let harness = try Harness()
        let day: Int64 = 86400
        let now = Int64(Date().timeIntervalSince1970)
        // Devices the fleet below does not run: they last checked in weeks ago, and the chain they hold expires
        // sooner than they have been away (the stranded-risk view), or later.
        let store = try openStore(url: harness.storeURL)
        try store.write { tx in
            for index in 0..<60 {
                let id = String(format: "sleepy-%03d", index)
                let away = Int64(10 + (index * 7) % 80) * day
                try tx.saveDevice(
                    DeviceRecord(id: id, firstSeen: now - 400 * day, lastSeen: now - away, inventory: nil, issuedSeq: 0)
                )
                let left = index < 3 ? -Int64(index + 1) * day : Int64(3 + (index * 11) % 120) * day
                try tx.saveExpiry(device: id, target: "broker-ca", notAfter: now + left)
            }
        }
        store.close()
        let port = try Broker.freePort()
        try harness.startDaemon(
            configPath: harness.writeConfig(
                extra:
                    "http: {host: 127.0.0.1, port: \(port), tokens: [{name: alice, sha256: \(HTTPAPITests.tokenSHA256)}]}"
            ))
        let devices = 240
        _ = try harness.startFleet(harness.fleetOptions(devices: devices))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == devices }
        let base = "http://127.0.0.1:\(port)"
        // A campaign slow enough to watch: 240 devices at 6 bundles/s, in three waves.
        let created = try await HTTPAPITests.request(
            "POST", base + "/api/v1/campaigns",
            body: [
                "name": "broker CA 2027", "targets": [["tag": 43, "credential": "new-ca"]],
                "select": ["prefix": "dev-"], "waves": ["10%", "50%", "100%"], "rate": 6, "successThreshold": 0.5,
            ], token: HTTPAPITests.token)
        #expect(created.status == 201, "\(created)")
        let id = try #require(created.json["id"] as? String)
        // No inline script runs (red-team #32, finding 9): the pages allow scripts from their own origin only, and
        // the campaign page's one script is a served file whose SRI digest the page names. The browser run below
        // shows that script working under that policy (live waves, pause), with no CSP violation in its log.
        let (pageData, pageResponse) = try await URLSession.shared.data(from: URL(string: base + "/campaigns/\(id)")!)
        let csp = (pageResponse as? HTTPURLResponse)?.value(forHTTPHeaderField: "Content-Security-Policy") ?? ""
        let scriptSource = csp.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.first {
            $0.hasPrefix("script-src")
        }
        #expect(scriptSource == "script-src 'self'", "\(csp)")
        let html = String(decoding: pageData, as: UTF8.self)
        #expect(!html.contains("<script>") && !html.contains(" onclick="), "no inline script")
        let integrity = try #require(html.firstMatch(of: /src="\/console\/campaign.js" integrity="(sha256-[^"]+)"/)?.1)
        let (scriptData, scriptResponse) = try await URLSession.shared.data(
            from: URL(string: base + "/console/campaign.js")!)
        let served = try #require(scriptResponse as? HTTPURLResponse)
        #expect(served.value(forHTTPHeaderField: "Content-Type")?.hasPrefix("text/javascript") == true)
        #expect(served.value(forHTTPHeaderField: "X-Content-Type-Options") == "nosniff")
        #expect(integrity == "sha256-" + Data(SHA256.hash(data: scriptData)).base64EncodedString())
        let shots =
            ProcessInfo.processInfo.environment["CERTROT_SCREENSHOTS"]
            ?? FileManager.default.temporaryDirectory.appendingPathComponent(
                "certrot-console-\(UUID().uuidString.prefix(6))"
            ).path
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("console/console_test.py").path
        let run = try await HTTPAPITests.runOffThePool(
            "/usr/bin/env",
            [
                "python3", script, "--base", base, "--token", HTTPAPITests.token, "--campaign", id, "--device",
                "dev-00017", "--screenshots", shots,
            ])
        #expect(
            run.status == 0,
            "console test (needs chromium, chromium-driver and selenium; scripts/bootstrap installs them):\n\(run.output.suffix(4000))"
        )
        // The pause the browser made is the token holder's, in the audit log.
        let status = try await HTTPAPITests.request("GET", base + "/api/v1/campaigns/\(id)")
        #expect(status.json["state"] as? String == "paused")
        await harness.stop()
    }
}

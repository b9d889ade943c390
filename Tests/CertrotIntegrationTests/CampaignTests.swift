import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Synchronization
import Testing

/// Campaigns against a real broker, the SQLite store (and PostgreSQL for the main one) and the reference simulator. The daemon has no configured
/// target: devices keep the old CA until a campaign says otherwise.
@Suite(.serialized) struct CampaignTests {
    static let noTargets = "[]"

    func startCampaignHarness(
        devices: Int, store: StoreKind = .sqlite, configure: (inout FleetOptions) -> Void = { _ in },
        clock: (@Sendable () -> Int64)? = nil
    ) async throws -> (Harness, SimulatedFleet) {
        let harness = try Harness(store: store)
        try harness.startDaemon(configPath: try harness.writeConfig(targets: Self.noTargets), clock: clock)
        var options = harness.fleetOptions(devices: devices)
        configure(&options)
        let fleet = try harness.startFleet(options)
        try await waitForDevices(harness, count: devices)
        return (harness, fleet)
    }

    func waitForDevices(_ harness: Harness, count: Int) async throws {
        for _ in 0..<300 {
            if let status = try? await harness.rpc().result("fleet.status", timeout: 2),
                status["devices"] as? Int == count
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("the daemon did not see \(count) devices")
        throw Harness.HarnessError.timeout
    }

    func create(_ harness: Harness, _ params: [String: Any]) async throws -> String {
        let result = try await harness.rpc().result("campaign.create", params: params, timeout: 30)
        return try #require(result["id"] as? String)
    }

    func status(_ harness: Harness, _ id: String) async throws -> [String: Any] {
        try await harness.rpc().result("campaign.status", params: ["id": id])
    }

    /// Polls campaign.status until `done`, calling `observe` with each status.
    @discardableResult
    func waitFor(
        _ harness: Harness, _ id: String, timeout: Double = 90, observe: ([String: Any]) -> Void = { _ in },
        _ done: ([String: Any]) -> Bool
    ) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            if let current = try? await status(harness, id) {
                last = current
                observe(current)
                if done(current) { return current }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("campaign \(id) did not get there in \(timeout) s; last: \(last)")
        throw Harness.HarnessError.timeout
    }

    func states(_ status: [String: Any]) -> [String: Int] { status["states"] as? [String: Int] ?? [:] }

    func target(_ harness: Harness, chain: String? = nil, strategy: String = "replace") -> [String: Any] {
        ["tag": 42, "type": 0, "chain": chain ?? harness.newCA.pem, "strategy": strategy]
    }

    // MARK: Waves

    @Test(arguments: StoreKind.allCases)
    func fourWaves_over1000Devices_proceedWaveByWave_andPublishRetainedProgress(store: StoreKind) async throws {
        let (harness, fleet) = try await startCampaignHarness(devices: 1000, store: store) {
            $0.devicesPerConnection = 100
        }
        let id = try await create(
            harness,
            [
                "name": "ca-2027", "targets": [target(harness)], "select": ["all": true],
                "waves": ["1%", "10%", "50%", "100%"],
            ])
        var violations: [String] = []
        var wavesSeen: Set<Int> = []
        let final = try await waitFor(
            harness, id, timeout: 180,
            observe: { status in
                let current = status["currentWave"] as? Int ?? -1
                wavesSeen.insert(current)
                // No device of a later wave is touched before its wave starts.
                for wave in status["waves"] as? [[String: Any]] ?? [] {
                    guard let index = wave["index"] as? Int, index > current else { continue }
                    let counts = wave["states"] as? [String: Int] ?? [:]
                    if counts["waiting"] != wave["size"] as? Int {
                        violations.append("wave \(index) moved while wave \(current) ran: \(counts)")
                    }
                }
            }
        ) {
            // It completes at its success threshold (95 %); the last devices' acks may land after that.
            $0["state"] as? String == "completed" && (($0["states"] as? [String: Int])?["verified"] ?? 0) == 1000
        }
        #expect(violations.isEmpty, "\(violations.prefix(3))")
        #expect(wavesSeen.count >= 2)
        let sizes = (final["waves"] as? [[String: Any]] ?? []).compactMap { $0["size"] as? Int }
        #expect(sizes == [10, 90, 400, 500])
        #expect(states(final)["verified"] == 1000)
        // Every device holds the new CA.
        let digest = try PEM.normalizeChain(harness.newCA.pem).sha256
        #expect(fleet.snapshot().allSatisfy { $0.digest(tag: 42) == digest })
        // The retained progress topic has the final state for a late subscriber (published at most once a second,
        // so it may arrive just after the subscription).
        // The campaign completes at its success threshold; the last acks may land after that status went out.
        let retained = try await retainedStatus(harness, id) {
            $0["state"] as? String == "completed" && ($0["states"] as? [String: Int])?["verified"] == 1000
        }
        #expect(retained["state"] as? String == "completed")
        #expect((retained["states"] as? [String: Int])?["verified"] == 1000)
        let list = try await harness.rpc().result("campaign.list")
        #expect((list["campaigns"] as? [[String: Any]])?.first?["id"] as? String == id)
        await harness.stop()
    }

    /// The first status on the campaign's topic (retained) — or a later one, until `until` holds (10 s at most).
    func retainedStatus(
        _ harness: Harness, _ id: String, until: @escaping ([String: Any]) -> Bool
    ) async throws -> [String: Any] {
        let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
        let client = try MQTTClient(
            options: MQTTOptions(
                host: harness.broker.host, port: harness.broker.port, clientID: "dash-\(UUID().uuidString.prefix(6))"),
            logger: harness.logger
        ) { input.yield($0) }
        try client.start()
        defer { client.stop() }
        var first = true
        var last: [String: Any] = [:]
        let deadline = Date().addingTimeInterval(10)
        let timer = Task {
            try await Task.sleep(for: .seconds(10))
            input.finish()
        }
        defer { timer.cancel() }
        for await event in stream {
            switch event {
            case .connected: try client.subscribe([Topics.campaignStatus(id)])
            case .message(let message):
                let status = try JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any] ?? [:]
                if first {
                    #expect(message.retained, "the first status a subscriber gets is the retained one")
                    first = false
                }
                last = status
                if until(status) || Date() > deadline { return status }
            default: break
            }
        }
        return last
    }

    @Test func errorThreshold_pausesTheCampaign_resumeGoesOn_andItCompletes() async throws {
        var rejecting: [String] = []
        let (harness, fleet) = try await startCampaignHarness(devices: 200) { options in
            for index in stride(from: 1, through: 200, by: 5) {
                rejecting.append(options.deviceID(index))
                options.behaviours[options.deviceID(index)] = DeviceBehaviour(rejects: true)
            }
        }
        let id = try await create(
            harness,
            [
                "name": "canary", "targets": [target(harness)], "select": ["prefix": "dev-"], "rate": 40,
                "errorThreshold": 0.05, "minExecuted": 10,
            ])
        let paused = try await waitFor(harness, id) { $0["state"] as? String == "paused" }
        let reason = paused["reason"] as? String ?? ""
        #expect(reason.contains("error threshold"), "\(reason)")
        let failures = paused["failures"] as? [[String: Any]] ?? []
        #expect(
            !failures.isEmpty
                && failures.allSatisfy {
                    rejecting.contains($0["device"] as? String ?? "") && $0["state"] as? String == "rejected"
                })
        // Nothing more goes out while paused.
        let sentAtPause = fleet.stats.partsReceived
        try await Task.sleep(for: .seconds(2))
        let sentWhilePaused = fleet.stats.partsReceived - sentAtPause
        #expect(sentWhilePaused < 40, "parts kept flowing while paused: \(sentWhilePaused)")
        // The cause is fixed (the devices now accept the new CA); the operator resumes.
        for device in rejecting { fleet.setBehaviour(DeviceBehaviour(), for: device) }
        var resumes = 0
        let final = try await waitFor(harness, id) { status in
            if status["state"] as? String == "paused", resumes < 5 {
                resumes += 1
                _ = try? JSONSerialization.data(withJSONObject: [:])
                Task { _ = try? await harness.rpc().result("campaign.resume", params: ["id": id]) }
            }
            return status["state"] as? String == "completed"
        }
        #expect(resumes >= 1)
        let counts = states(final)
        #expect(counts["verified", default: 0] + counts["rejected", default: 0] == 200)
        #expect(counts["rejected", default: 0] >= 1)
        await harness.stop()
    }

    @Test func pauseAfterWave_waitsForAPerson() async throws {
        let (harness, _) = try await startCampaignHarness(devices: 40)
        let id = try await create(
            harness,
            [
                "name": "careful", "targets": [target(harness)], "select": ["all": true], "waves": [4, "100%"],
                "pauseAfterWave": true,
            ])
        let paused = try await waitFor(harness, id) { $0["state"] as? String == "paused" }
        #expect((paused["reason"] as? String ?? "").contains("resume to start wave 2"))
        #expect(states(paused)["verified"] == 4)
        #expect(states(paused)["waiting"] == 36)
        let resumed = try await harness.rpc().result("campaign.resume", params: ["id": id])
        #expect(resumed["currentWave"] as? Int == 1)
        try await waitFor(harness, id) { $0["state"] as? String == "completed" && self.states($0)["verified"] == 40 }
        await harness.stop()
    }

    @Test func abort_cancelsWhatWasNotSent_andInFlightAcksStillCount() async throws {
        let (harness, _) = try await startCampaignHarness(devices: 150)
        let id = try await create(
            harness, ["name": "slow", "targets": [target(harness)], "select": ["all": true], "rate": 10])
        try await waitFor(harness, id) { (self.states($0)["verified"] ?? 0) >= 10 }
        let aborted = try await harness.rpc().result("campaign.abort", params: ["id": id, "reason": "wrong CA"])
        #expect(aborted["state"] as? String == "aborted")
        let cancelled = aborted["cancelled"] as? Int ?? 0
        #expect(cancelled > 50)
        try await Task.sleep(for: .seconds(2))
        let after = try await status(harness, id)
        #expect(after["state"] as? String == "aborted")
        #expect((after["reason"] as? String ?? "").contains("wrong CA"))
        let counts = states(after)
        #expect(counts["cancelled"] == cancelled)
        #expect(counts["verified", default: 0] + counts["cancelled", default: 0] == 150, "\(counts)")
        #expect(counts["waiting"] == 0 && counts["pending"] == 0 && counts["sent"] == 0)
        // Nothing resumes an aborted campaign.
        let reply = try await harness.rpc().call("campaign.resume", params: ["id": id])
        #expect((reply["error"] as? [String: Any])?["code"] as? Int == -32021)
        let listed = try await harness.rpc().result(
            "device.list", params: ["campaign": id, "state": "cancelled", "limit": 5])
        #expect((listed["devices"] as? [[String: Any]])?.count == 5)
        await harness.stop()
    }

    // MARK: Rate and windows

    @Test func rateLimit_isHonouredWithin10Percent_measuredFromMessageTimestamps() async throws {
        let (harness, _) = try await startCampaignHarness(devices: 120)
        // Watch the bundles go by, as a device would see them.
        let arrivals = Mutex<[String: Double]>([:])
        let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
        let watcher = try MQTTClient(
            options: MQTTOptions(host: harness.broker.host, port: harness.broker.port, clientID: "watcher"),
            logger: harness.logger
        ) { event in
            if case .message(let message) = event {
                let now = Date().timeIntervalSince1970
                arrivals.withLock { if $0[message.topic] == nil { $0[message.topic] = now } }
            }
            input.yield(event)
        }
        try watcher.start()
        for await event in stream {
            if case .connected = event { try watcher.subscribe(["+/certs"]) }
            if case .subscribed = event { break }
        }
        let id = try await create(
            harness, ["name": "paced", "targets": [target(harness)], "select": ["all": true], "rate": 20])
        try await waitFor(harness, id) { $0["state"] as? String == "completed" }
        watcher.stop()
        let times = arrivals.withLock { $0.values.sorted() }
        #expect(times.count == 120)
        let measured = Double(times.count - 1) / (times.last! - times.first!)
        #expect(measured >= 18 && measured <= 22, "measured \(measured) bundles/s for a limit of 20")
        await harness.stop()
    }

    @Test func maintenanceWindow_holdsSendingUntilItOpens_withAControllableClock() async throws {
        // A clock the test moves: it starts one minute before a window that opened at the last full or half hour
        // (UTC) and lasts 20 minutes. Not earlier: the test CA is valid from an hour before now (a clock set before
        // the hour began failed the preflight in an hour's last minute), and devices refuse bundles from the future.
        let real = Int64(Date().timeIntervalSince1970)
        let opensAt = real - real % 1800
        let fake = Mutex<Int64>(opensAt - 60)
        func hhmm(_ t: Int64) -> String { String(format: "%02d:%02d", t / 3600 % 24, t / 60 % 60) }
        let window = hhmm(opensAt)
        let closes = hhmm(opensAt + 1200)
        let (harness, fleet) = try await startCampaignHarness(devices: 20, clock: { fake.withLock { $0 } })
        let id = try await create(
            harness,
            [
                "name": "night", "targets": [target(harness)], "select": ["all": true],
                "windows": [["days": [], "start": window, "end": closes, "zone": "UTC"]],
            ])
        try await Task.sleep(for: .seconds(3))
        let held = try await status(harness, id)
        #expect(states(held)["waiting"] == 20, "\(states(held))")
        #expect(fleet.stats.partsReceived == 0)
        fake.withLock { $0 = opensAt + 30 }
        try await waitFor(harness, id) { $0["state"] as? String == "completed" && self.states($0)["verified"] == 20 }
        await harness.stop()
    }

    /// Two campaigns on one tag created within the same second (the daemon's clock stands still here): the second
    /// is the newer and rotates every device. They had been ordered by their random ids, so half the time the
    /// second one's members were all cancelled as "superseded" by the first.
    @Test func aSecondCampaignCreatedInTheSameSecond_isTheNewer() async throws {
        let frozen = Int64(Date().timeIntervalSince1970)
        let (harness, fleet) = try await startCampaignHarness(devices: 20, clock: { frozen })
        let first = try await create(harness, ["name": "first", "targets": [target(harness)], "select": ["all": true]])
        try await waitFor(harness, first) { $0["state"] as? String == "completed" && self.states($0)["verified"] == 20 }
        let next = try CertificateFactory.rootCA(commonName: "Next CA", days: 700)
        for _ in 0..<3 {  // several campaigns, so that ids in either order are covered
            let id = try await create(
                harness,
                [
                    "name": "next-\(UUID().uuidString.prefix(4))", "targets": [target(harness, chain: next.pem)],
                    "select": ["all": true],
                ])
            let done = try await waitFor(harness, id) { $0["state"] as? String == "completed" }
            #expect(states(done)["cancelled"] == 0, "\(states(done))")
        }
        let digest = try PEM.normalizeChain(next.pem).sha256
        #expect(fleet.snapshot().allSatisfy { $0.digest(tag: 42) == digest })
        await harness.stop()
    }

    // MARK: Selection

    @Test func continuousCampaign_takesInDevicesThatAppearLater() async throws {
        let (harness, _) = try await startCampaignHarness(devices: 20)
        let id = try await create(
            harness, ["name": "always", "targets": [target(harness)], "select": ["prefix": "dev-"], "continuous": true])
        try await waitFor(harness, id) { self.states($0)["verified"] == 20 }
        var late = harness.fleetOptions(devices: 10)
        late.idPrefix = "dev-late-"
        _ = try harness.startFleet(late)
        let final = try await waitFor(harness, id) { self.states($0)["verified"] == 30 }
        #expect(final["state"] as? String == "running")
        #expect(final["total"] as? Int == 30)
        // A device outside the selection does not join.
        var other = harness.fleetOptions(devices: 3)
        other.idPrefix = "other-"
        _ = try harness.startFleet(other)
        try await waitForDevices(harness, count: 33)
        try await Task.sleep(for: .seconds(1))
        #expect(try await status(harness, id)["total"] as? Int == 30)
        await harness.stop()
    }

    // MARK: Strategies

    @Test func overlap_thatFits_writesNewAndOldRoots_andOneThatDoesNot_isRefusedWithTheBytesOver() async throws {
        let (harness, fleet) = try await startCampaignHarness(devices: 10)
        let id = try await create(
            harness, ["name": "overlap", "targets": [target(harness, strategy: "overlap")], "select": ["all": true]])
        let final = try await waitFor(harness, id) { $0["state"] as? String == "completed" }
        #expect(states(final)["verified"] == 10)
        let expected = try PEM.normalizeChain(harness.newCA.pem + harness.oldCA.pem)
        for device in fleet.snapshot() { #expect(device.digest(tag: 42) == expected.sha256) }

        // Devices now hold new + old (~1.2 KB). An overlap of a 3.5 KB chain with that is over 4 KB.
        // A new chain that fits alone (≤ 4096 bytes) but not with the ~1.2 KB the devices hold.
        var big = ""
        while big.utf8.count < 3200 {
            big += try CertificateFactory.rootCA(commonName: "Big CA \(UUID().uuidString)", days: 400).pem
        }
        #expect(big.utf8.count <= 4096)
        let reply = try await harness.rpc().call(
            "campaign.create",
            params: [
                "name": "too-big", "targets": [target(harness, chain: big, strategy: "overlap")],
                "select": ["all": true],
            ], timeout: 30)
        let error = try #require(reply["error"] as? [String: Any])
        #expect(error["code"] as? Int == -32020)
        let data = error["data"] as? [String: Any] ?? [:]
        #expect(data["reason"] as? String == "overlap_too_large")
        let over = data["over"] as? Int ?? 0
        #expect(over > 0 && (error["message"] as? String ?? "").contains("\(over)"))
        await harness.stop()
    }

    // MARK: Preflight

    @Test func preflight_refusesEveryUnsafeCampaign_sayingWhy() async throws {
        let (harness, fleet) = try await startCampaignHarness(devices: 3)
        let rpc = try harness.rpc()
        func refusal(
            _ targets: [[String: Any]], extra: [String: Any] = [:]
        ) async throws -> (reason: String, message: String) {
            var params: [String: Any] = [
                "name": "unsafe-\(UUID().uuidString.prefix(6))", "targets": targets, "select": ["all": true],
            ]
            params.merge(extra) { $1 }
            let reply = try await rpc.call("campaign.create", params: params, timeout: 30)
            let error = try #require(reply["error"] as? [String: Any], "accepted: \(reply)")
            return ((error["data"] as? [String: Any])?["reason"] as? String ?? "", error["message"] as? String ?? "")
        }
        let soon = try CertificateFactory.rootCA(commonName: "Soon CA", days: 10)
        let later = try CertificateFactory.rootCA(
            commonName: "Later CA", notBefore: Date().addingTimeInterval(86400),
            notAfter: Date().addingTimeInterval(400 * 86400))
        let expired = try CertificateFactory.rootCA(
            commonName: "Expired CA", notBefore: Date().addingTimeInterval(-400 * 86400),
            notAfter: Date().addingTimeInterval(-86400))
        let notCA = try CertificateFactory.rootCA(commonName: "Not a CA", days: 400, isCA: false)
        let huge = try (0..<8).map { _ in
            try CertificateFactory.rootCA(commonName: "Huge \(UUID().uuidString)", days: 400).pem
        }.joined()
        let stranger = try CertificateFactory.rootCA(commonName: "Stranger CA", days: 400)
        let goodEndpoint = try CertificateFactory.leaf(dnsName: "mqtt.example.com", issuer: harness.newCA)
        let wrongEndpoint = try CertificateFactory.leaf(dnsName: "mqtt.example.com", issuer: stranger)

        var r = try await refusal([
            target(harness, chain: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        ])
        #expect(r.reason == "unparsable")
        r = try await refusal([target(harness, chain: soon.pem)])
        #expect(r.reason == "expires_soon" && r.message.contains("Soon CA"), "\(r)")
        r = try await refusal([target(harness, chain: later.pem)])
        #expect(r.reason == "not_yet_valid" && r.message.contains("Later CA"), "\(r)")
        r = try await refusal([target(harness, chain: expired.pem)])
        #expect(r.reason == "expired" && r.message.contains("Expired CA"), "\(r)")
        r = try await refusal([target(harness, chain: notCA.pem)])
        #expect(r.reason == "not_ca" && r.message.contains("Not a CA"), "\(r)")
        r = try await refusal([target(harness, chain: huge)])
        #expect(r.reason == "too_large" && r.message.contains("4096"), "\(r)")
        r = try await refusal([target(harness)], extra: ["endpointChain": wrongEndpoint.pem])
        #expect(r.reason == "endpoint_unverified" && r.message.contains("mqtt.example.com"), "\(r)")
        r = try await refusal([target(harness)], extra: ["endpointChain": goodEndpoint.pem + huge])
        #expect(r.reason == "endpoint_too_large", "\(r)")
        r = try await refusal([["tag": 42, "credential": "no-such-ca"]])
        #expect(r.reason == "unknown_credential" && r.message.contains("no-such-ca"), "\(r)")
        // With a short minimum the soon-expiring CA passes the validity check; a right endpoint passes.
        let ok = try await rpc.result(
            "campaign.create",
            params: [
                "name": "fine", "targets": [["tag": 42, "credential": "new-ca"]], "select": ["all": true],
                "endpointChain": goodEndpoint.pem,
            ], timeout: 30)
        let id = try #require(ok["id"] as? String)
        try await waitFor(harness, id) { $0["state"] as? String == "completed" }
        // Refused campaigns sent nothing: only the accepted one's bundles reached the devices.
        #expect(fleet.snapshot().allSatisfy { $0.appliedSeqs == [1] })
        await harness.stop()
    }

    // MARK: Auto-renewal

    @Test func autoRenewal_rotatesCredentialsThatExpireWithinRenewBefore_toTheSuccessor() async throws {
        let harness = try Harness()
        // The configured target is the old CA (20 days left); its successor the new CA; renew 30 days ahead.
        let config = try harness.writeConfig(
            targets:
                "\n  - {name: broker-ca, tag: 42, type: 0, chain: \(harness.path("old-ca.pem")), renewBefore: 30d, successor: \(harness.path("new-ca.pem"))}"
        )
        try harness.startDaemon(configPath: config)
        _ = try harness.startFleet(harness.fleetOptions(devices: 30))
        let rpc = try harness.rpc()
        var auto: [String: Any] = [:]
        for _ in 0..<300 {
            let list = (try? await rpc.result("campaign.list"))?["campaigns"] as? [[String: Any]] ?? []
            if let found = list.first(where: { $0["origin"] as? String == "auto" }),
                (found["states"] as? [String: Int])?["verified"] == 30
            {
                auto = found
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect((auto["name"] as? String ?? "").contains("broker-ca"))
        let digest = try PEM.normalizeChain(harness.newCA.pem).sha256
        let device = try await rpc.result(
            "device.status", params: ["device": harness.fleetOptions(devices: 1).deviceID(1)])
        let creds = device["inventory"] as? [[String: Any]] ?? []
        #expect(creds.first { $0["tag"] as? Int == 42 }?["sha256"] as? String == digest)
        // The configured target (the old CA) does not pull the renewed devices back.
        try await Task.sleep(for: .seconds(2))
        let fleetStatus = try await rpc.result("fleet.status")
        let expiry = fleetStatus["expiry"] as? [String: Any] ?? [:]
        #expect(((expiry["fleet"] as? [String: Int])?["later"] ?? 0) >= 30, "\(expiry)")
        await harness.stop()
    }

    // MARK: RPC shapes

    @Test func campaignMethods_refuseBadParams_withJSONRPCErrors() async throws {
        let (harness, _) = try await startCampaignHarness(devices: 2)
        let rpc = try harness.rpc()
        func code(_ method: String, _ params: [String: Any]) async throws -> (Int?, String) {
            let reply = try await rpc.call(method, params: params, timeout: 30)
            let error = reply["error"] as? [String: Any]
            return (error?["code"] as? Int, error?["message"] as? String ?? "")
        }
        let good = target(harness)
        let cases: [(String, [String: Any], Int, String)] = [
            ("campaign.create", ["targets": [good], "select": ["all": true]], -32602, "name"),
            ("campaign.create", ["name": "x", "select": ["all": true]], -32602, "targets"),
            ("campaign.create", ["name": "x", "targets": [good]], -32602, "select"),
            (
                "campaign.create", ["name": "x", "targets": [good], "select": ["all": true], "waves": ["150%"]], -32602,
                "waves[0]"
            ),
            (
                "campaign.create", ["name": "x", "targets": [good], "select": ["all": true], "errorThreshold": 2],
                -32602, "errorThreshold"
            ),
            ("campaign.create", ["name": "x", "targets": [good], "select": ["all": true], "rate": -1], -32602, "rate"),
            (
                "campaign.create", ["name": "x", "targets": [good], "select": ["all": true], "errorTreshold": 0.1],
                -32602, "errorTreshold"
            ),
            (
                "campaign.create", ["name": "x", "targets": [good], "select": ["all": true], "deadline": 1000], -32020,
                "deadline"
            ),
            (
                "campaign.create",
                [
                    "name": "x", "targets": [good], "select": ["all": true],
                    "windows": [["start": "25:00", "end": "02:00"]],
                ], -32602, "start"
            ),
            (
                "campaign.create",
                [
                    "name": "x", "targets": [good], "select": ["all": true],
                    "windows": [["start": "01:00", "end": "02:00", "zone": "Mars/Olympus"]],
                ], -32602, "zone"
            ),
            (
                "campaign.create", ["name": "x", "targets": [good], "select": ["prefix": "nobody-"]], -32020,
                "matches no"
            ),
            ("campaign.create", ["name": "x", "targets": [good], "select": ["holding": "xyz"]], -32602, "sha256"),
            (
                "campaign.create",
                ["name": "x", "targets": [["tag": 42, "chain": "a", "credential": "b"]], "select": ["all": true]],
                -32602, "exactly one"
            ),
            ("campaign.status", [:], -32602, "id"),
            ("campaign.status", ["id": "cmp-nope"], -32005, "cmp-nope"),
            ("campaign.pause", ["id": "cmp-nope"], -32005, "cmp-nope"),
            ("campaign.resume", ["id": 7], -32602, "id"),
            ("campaign.abort", [:], -32602, "id"),
            ("campaign.list", ["state": "sleeping"], -32602, "state"),
            ("device.list", ["limit": 0], -32602, "limit"),
            ("device.list", ["colour": "red"], -32602, "colour"),
            ("device.list", ["campaign": "cmp-nope"], -32005, "cmp-nope"),
            ("device.list", ["state": "waiting"], -32602, "campaign"),
            ("device.list", ["tag": 42], -32602, "expiringBefore"),
        ]
        for (method, params, expected, mentions) in cases {
            let (got, message) = try await code(method, params)
            #expect(got == expected, "\(method) \(params.keys.sorted()): \(String(describing: got)) \(message)")
            #expect(message.contains(mentions), "\(method): '\(message)' should mention \(mentions)")
        }
        // State errors: resume a running campaign, pause a completed one.
        let id = try await create(harness, ["name": "tiny", "targets": [good], "select": ["all": true]])
        try await waitFor(harness, id) { $0["state"] as? String == "completed" }
        #expect(try await code("campaign.pause", ["id": id]).0 == -32021)
        #expect(try await code("campaign.resume", ["id": id]).0 == -32021)
        // A second campaign with a running one's name is refused; completed names can be reused.
        let again = try await create(harness, ["name": "tiny", "targets": [good], "select": ["all": true]])
        #expect(again != id)
        // device.list pages through everything.
        let page1 = try await rpc.result("device.list", params: ["limit": 1])
        #expect((page1["devices"] as? [[String: Any]])?.count == 1)
        let next = try #require(page1["next"] as? String)
        let page2 = try await rpc.result("device.list", params: ["limit": 1, "after": next])
        #expect((page2["devices"] as? [[String: Any]])?.first?["device"] as? String != next)
        let holding = try await rpc.result(
            "device.list", params: ["holding": try PEM.normalizeChain(harness.newCA.pem).sha256])
        #expect((holding["devices"] as? [[String: Any]])?.count == 2)
        await harness.stop()
    }
}

/// The campaign CLI and campaigns declared in the config file.
@Suite(.serialized) struct CampaignCLITests {
    @Test func cli_createsListsWatchesAndPages_aCampaign() async throws {
        let harness = try Harness()
        try harness.startDaemon(configPath: try harness.writeConfig(targets: CampaignTests.noTargets))
        _ = try harness.startFleet(harness.fleetOptions(devices: 12))
        try await CampaignTests().waitForDevices(harness, count: 12)
        let broker = ["--broker", harness.broker.url]
        func certrot(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            try await runOffThePool(certrotBinary(), arguments)
        }

        // A refusal is explained, with its details.
        let soon = try CertificateFactory.rootCA(commonName: "Soon CA", days: 5)
        try soon.pem.write(toFile: harness.path("soon.pem"), atomically: true, encoding: .utf8)
        let refused = try await certrot(
            ["campaign", "create"] + broker + ["--name", "bad", "--chain", harness.path("soon.pem"), "--all"])
        #expect(refused.status != 0)
        #expect(refused.output.contains("expires_soon") && refused.output.contains("Soon CA"), "\(refused.output)")

        let created = try await certrot(
            ["campaign", "create"] + broker
                + [
                    "--name", "cli", "--chain", harness.path("new-ca.pem"), "--all", "--waves", "25%,100%", "--rate",
                    "50",
                    "--window", "* 00:00-00:00 UTC", "--json",
                ])
        #expect(created.status == 0, "\(created.output)")
        let id = try #require(
            (try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: Any])?["id"] as? String)
        let watched = try await certrot(["campaign", "watch", id, "--plain"] + broker)
        #expect(watched.status == 0, "\(watched.output)")
        #expect(watched.output.contains("completed") && watched.output.contains("verified 12/12"), "\(watched.output)")
        #expect(watched.output.contains("wave 1") && watched.output.contains("wave 2"))
        let listed = try await certrot(["campaign", "list"] + broker)
        #expect(listed.output.contains(id) && listed.output.contains("completed"))
        let status = try await certrot(["campaign", "status", id] + broker)
        #expect(status.output.contains("verified 12/12"))
        let page = try await certrot(["device", "list", "--campaign", id, "--limit", "5"] + broker)
        #expect(page.output.split(separator: "\n").filter { $0.hasPrefix("dev-") }.count == 5)
        #expect(page.output.contains("next page: --after"))
        #expect(try await certrot(["campaign", "pause", id] + broker).status != 0)
        await harness.stop()
    }

    @Test func campaignsDeclaredInTheConfig_areCreatedOnce_andCheckedByConfigCheck() async throws {
        let harness = try Harness()
        let declared = """
            campaigns:
              - name: declared-rollover
                targets: [{tag: 42, chain: \(harness.path("new-ca.pem"))}]
                select: {prefix: "dev-"}
                waves: ["50%", "100%"]
            """
        let config = try harness.writeConfig(targets: CampaignTests.noTargets, extra: declared)
        // The fleet's retained inventories first: the daemon creates the campaign a second after it connects, and
        // on a loaded machine ten devices may not have published by then (its selection would be empty).
        let fleet = try harness.startFleet(harness.fleetOptions(devices: 10))
        for _ in 0..<300 where fleet.stats.inventoriesPublished < 10 { try await Task.sleep(for: .milliseconds(50)) }
        try harness.startDaemon(configPath: config, adjust: { $0.declaredCampaignDelay = 1 })
        let rpc = try harness.rpc()
        var id = ""
        for _ in 0..<300 {
            let list = (try? await rpc.result("campaign.list"))?["campaigns"] as? [[String: Any]] ?? []
            if let found = list.first, found["state"] as? String == "completed" {
                id = found["id"] as? String ?? ""
                #expect(found["origin"] as? String == "config")
                #expect((found["states"] as? [String: Int])?["verified"] == 10)
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(!id.isEmpty)
        // A restart does not create it again.
        await harness.stopDaemon()
        try harness.startDaemon(configPath: config, adjust: { $0.declaredCampaignDelay = 1 })
        try await Task.sleep(for: .seconds(3))
        var answered: [String: Any]?
        for _ in 0..<10 where answered == nil { answered = try? await rpc.result("campaign.list", timeout: 3) }
        #expect((answered?["campaigns"] as? [[String: Any]])?.count == 1)

        // config check names a bad declared campaign by its key path.
        try
            (try String(contentsOfFile: config, encoding: .utf8)
            + "\n  - {name: broken, targets: [{tag: 42}], select: {all: true}}\n")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let checked = try await runOffThePool(certrotBinary(), ["config", "check", config])
        #expect(checked.status != 0)
        #expect(
            checked.output.contains("campaigns[1]") && checked.output.contains("exactly one of chain"),
            "\(checked.output)")
        await harness.stop()
    }
}

/// Runs a child process on a thread of its own: waiting for it on the cooperative pool (two threads on this
/// machine) would starve the in-process daemon the child talks to.
func runOffThePool(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            do {
                continuation.resume(returning: try run(executable, arguments))
            } catch {
                continuation.resume(throwing: error)
            }
        }.start()
    }
}

/// How campaigns share a tag with configured targets, and time: start and deadline.
@Suite(.serialized) struct CampaignOwnershipTests {
    @Test func aCampaign_takesTheTagOverFromTheConfiguredTarget_whichDoesNotPullDevicesBack() async throws {
        let harness = try Harness()
        try harness.startDaemon()  // configured target: the new CA in tag 42
        let fleet = try harness.startFleet(harness.fleetOptions(devices: 10))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 10 }
        let next = try CertificateFactory.rootCA(commonName: "Next CA", days: 900)
        let tests = CampaignTests()
        let id = try await tests.create(
            harness, ["name": "next", "targets": [["tag": 42, "chain": next.pem]], "select": ["all": true]])
        try await tests.waitFor(harness, id) { $0["state"] as? String == "completed" }
        try await Task.sleep(for: .seconds(3))
        let digest = try PEM.normalizeChain(next.pem).sha256
        for device in fleet.snapshot() {
            #expect(device.digest(tag: 42) == digest)
            #expect(device.appliedSeqs == [1, 2], "\(device.id): \(device.appliedSeqs)")
        }
        await harness.stop()
    }

    @Test func scheduledStart_waits_andADeadline_abortsWhatIsLeft() async throws {
        // The daemon's clock is the test's: it starts now and jumps (within the devices' 300 s iat skew).
        let t0 = Int64(Date().timeIntervalSince1970)
        let clock = Mutex<Int64>(t0)
        let tests = CampaignTests()
        let (harness, fleet) = try await tests.startCampaignHarness(devices: 60, clock: { clock.withLock { $0 } })
        let id = try await tests.create(
            harness,
            [
                "name": "timed", "targets": [tests.target(harness)], "select": ["all": true], "rate": 5,
                "start": t0 + 100, "deadline": t0 + 200,
            ])
        try await Task.sleep(for: .seconds(2))
        let early = try await tests.status(harness, id)
        #expect(early["state"] as? String == "scheduled")
        #expect(fleet.stats.partsReceived == 0)
        clock.withLock { $0 = t0 + 100 }
        try await tests.waitFor(harness, id) { ($0["states"] as? [String: Int])?["verified"] ?? 0 >= 5 }
        clock.withLock { $0 = t0 + 200 }
        let final = try await tests.waitFor(harness, id, timeout: 30) { $0["state"] as? String == "aborted" }
        #expect((final["reason"] as? String ?? "").contains("deadline"))
        let counts = tests.states(final)
        #expect((counts["verified"] ?? 0) >= 5 && (counts["cancelled"] ?? 0) > 0, "\(counts)")
        #expect(counts["waiting"] == 0, "\(counts)")
        await harness.stop()
    }
}

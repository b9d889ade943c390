import CertrotCore
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

/// Several `certrot serve` replicas on one PostgreSQL and one mosquitto (docs/scaling.md).
@Suite(.serialized) struct ClusterTests {
    /// Devices from CERTROT_CLUSTER_DEVICES (default 5,000).
    @Test func threeReplicas_oneKilledMidCampaign_theCampaignCompletes_noSeqReused_oneBundlePerDevice() async throws {
        let devices = ProcessInfo.processInfo.environment["CERTROT_CLUSTER_DEVICES"].flatMap(Int.init) ?? 5000
        let harness = try Harness(store: .postgres)
        let base = try String(
            contentsOfFile: try harness.writeConfig(ackTimeout: "90s", targets: "[]"), encoding: .utf8)
        var replicas: [String: ChildProcess] = [:]
        func start(_ name: String) throws {
            let config = harness.path("\(name).yaml")
            try (base + "\ncluster: {replica: \(name), deadAfter: 5s}\n").write(
                toFile: config, atomically: true, encoding: .utf8)
            replicas[name] = try ChildProcess(
                executable: certrotBinary(), arguments: ["serve", "--config", config, "--log-level", "info"],
                outputPath: harness.path("\(name).log"))
        }
        for name in ["r1", "r2", "r3"] { try start(name) }
        defer { for process in replicas.values { process.terminate() } }
        func log(_ name: String) -> String {
            (try? String(contentsOfFile: harness.path("\(name).log"), encoding: .utf8)) ?? ""
        }
        func leaders() -> [String] {
            replicas.keys.sorted().filter { name in
                let text = log(name)
                guard let lead = text.range(of: "this replica leads the cluster", options: .backwards) else {
                    return false
                }
                return text.range(of: "this replica follows", options: .backwards).map {
                    $0.lowerBound < lead.lowerBound
                } ?? true
            }
        }

        var options = harness.fleetOptions(devices: devices)
        options.devicesPerConnection = 250
        options.offlineDelay = 1
        let fleet = try harness.startFleet(options)
        var known = 0
        for _ in 0..<600 {
            known = (try? await harness.rpc().result("fleet.status", timeout: 2))?["devices"] as? Int ?? known
            if known == devices { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        try #require(known == devices, "the replicas stored \(known) of \(devices) devices")
        #expect(leaders().count == 1, "exactly one leader: \(leaders())")

        let created = try await harness.rpc().result(
            "campaign.create",
            params: [
                "name": "cluster", "targets": [["tag": 42, "type": 0, "chain": harness.newCA.pem]],
                "select": ["all": true],
                // About 20 s of sending, so that the kill lands mid-way.
                "rate": max(50, devices / 20),
            ],
            timeout: 30)
        let id = try #require(created["id"] as? String)

        // Kill the leader once a third of the fleet is verified (fleet.status is answered beside the engine, so it
        // comes back even under load): the bundles it had not delivered and the campaign itself must be taken over.
        var killed: String?
        var deadline = Date().addingTimeInterval(300)
        while killed == nil, Date() < deadline {
            let fleetStatus = try? await harness.rpc().result("fleet.status", timeout: 2)
            let verified = (fleetStatus?["campaignStates"] as? [String: Int])?["verified"] ?? 0
            if verified >= devices / 3, let leader = leaders().first {
                #expect(verified < devices, "the kill should land mid-campaign")
                replicas[leader]?.signal(SIGKILL)
                killed = leader
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        var last: [String: Any] = [:]
        deadline = Date().addingTimeInterval(300)
        while Date() < deadline {
            if let status = try? await harness.rpc().result("campaign.status", params: ["id": id], timeout: 2) {
                last = status
                // Completed at the success threshold; the last devices' acks still count.
                if status["state"] as? String == "completed",
                    (status["states"] as? [String: Int])?["verified"] == devices
                {
                    break
                }
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        let killedReplica = try #require(killed, "no leader to kill")
        #expect(last["state"] as? String == "completed", "last status: \(last)")
        #expect((last["states"] as? [String: Int])?["verified"] == devices)
        for _ in 0..<100 where leaders().filter({ $0 != killedReplica }).isEmpty {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(
            leaders().filter { $0 != killedReplica }.count == 1,
            "one surviving replica took the leadership: \(leaders())")

        // Every device holds the new CA, applied exactly one bundle, and was sent one bundle (one jti, one seq).
        let digest = harness.newChain.sha256
        let snapshot = fleet.snapshot()
        #expect(snapshot.filter { $0.digest(tag: 42) != digest }.count == 0)
        let twice = snapshot.filter { $0.appliedSeqs.count != 1 }.map { "\($0.id): \($0.appliedSeqs)" }
        #expect(twice.isEmpty, "devices that applied other than one bundle: \(twice.prefix(5))")
        #expect(try harness.storeScalar("SELECT COUNT(*) FROM bundles") == devices)
        #expect(
            try harness.storeScalar(
                "SELECT COUNT(*) FROM (SELECT device FROM bundles GROUP BY device HAVING COUNT(*) > 1) AS d") == 0)
        #expect(
            try harness.storeScalar(
                "SELECT COUNT(*) FROM (SELECT device, seq FROM bundles GROUP BY device, seq HAVING COUNT(*) > 1) AS d")
                == 0)
        // Outbound work is shared: more than one replica signed and sent bundles (claimed from the awaiting ones).
        let senders =
            try harness.storeScalar("SELECT COUNT(DISTINCT issued_by) FROM rotations WHERE issued_by IS NOT NULL") ?? 0
        #expect(senders >= 2, "bundles were sent by \(senders) replica(s)")
        // The replicas' logs outlive the test's directory, for a look after a failure.
        let keep = FileManager.default.temporaryDirectory.appendingPathComponent("certrot-cluster-logs")
        try? FileManager.default.removeItem(at: keep)
        try? FileManager.default.createDirectory(at: keep, withIntermediateDirectories: true)
        for name in replicas.keys {
            try? FileManager.default.copyItem(
                atPath: harness.path("\(name).log"), toPath: keep.appendingPathComponent("\(name).log").path)
        }
        await harness.stop()
    }
}

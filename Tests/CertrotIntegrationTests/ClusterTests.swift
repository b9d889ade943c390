import CertrotCore
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Several `certrot serve` replicas on one PostgreSQL and one mosquitto (docs/scaling.md).
@Suite(.serialized) struct ClusterTests {
    /// What befalls the cluster once a third of the fleet is verified (docs/scaling.md, "Faults").
    enum Fault: String, CustomStringConvertible {
        /// SIGKILL the leader.
        case killLeader
        /// SIGSTOP the leader for longer than `deadAfter`, until another replica leads; then SIGCONT.
        case pauseLeader
        /// `pg_ctl restart -m fast`, down for two seconds.
        case restartDatabase
        /// End a follower's database sessions (`pg_terminate_backend`), again and again for five seconds, while
        /// its broker connection stays up.
        case cutReplicaFromDatabase
        /// Restart mosquitto (its sessions and retained messages are saved), down for a second.
        case restartBroker

        var description: String { rawValue }
    }

    /// Devices from CERTROT_CLUSTER_DEVICES (default 5,000).
    @Test func threeReplicas_oneKilledMidCampaign_theCampaignCompletes_noSeqReused_oneBundlePerDevice() async throws {
        let devices = ProcessInfo.processInfo.environment["CERTROT_CLUSTER_DEVICES"].flatMap(Int.init) ?? 5000
        try await campaign(devices: devices, fault: .killLeader)
    }

    /// The faults of issue #16 over a 2,000-device campaign (CERTROT_CLUSTER_FAULT_DEVICES): each time the campaign
    /// completes, every device applied one bundle, and no seq was used twice.
    @Test(arguments: [Fault.pauseLeader, .restartDatabase, .cutReplicaFromDatabase, .restartBroker])
    func threeReplicas_aFaultMidCampaign_theCampaignCompletes(fault: Fault) async throws {
        let devices = ProcessInfo.processInfo.environment["CERTROT_CLUSTER_FAULT_DEVICES"].flatMap(Int.init) ?? 2000
        try await campaign(devices: devices, fault: fault)
    }

    /// True once one of `ports` answers `/readyz` with 503 within `seconds`.
    func sawNotReady(ports: [Int32], within seconds: Double = 10) async throws -> Bool {
        let until = Date().addingTimeInterval(seconds)
        repeat {
            for port in ports {
                let url = URL(string: "http://127.0.0.1:\(port)/readyz")!
                if let (_, response) = try? await URLSession.shared.data(from: url),
                    (response as? HTTPURLResponse)?.statusCode == 503
                {
                    return true
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        } while Date() < until
        return false
    }

    func campaign(devices: Int, fault: Fault) async throws {
        let harness = try Harness(store: .postgres)
        let base = try String(
            contentsOfFile: try harness.writeConfig(ackTimeout: "90s", targets: "[]"), encoding: .utf8)
        var replicas: [String: ChildProcess] = [:]
        var httpPorts: [String: Int32] = [:]
        func start(_ name: String) throws {
            let config = harness.path("\(name).yaml")
            let port = try Broker.freePort()
            httpPorts[name] = port
            try (base + "\ncluster: {replica: \(name), deadAfter: 5s}\nhttp: {host: 127.0.0.1, port: \(port)}\n").write(
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

        // The fault lands once a third of the fleet is verified (fleet.status is answered beside the engine, so it
        // comes back even under load): the bundles a lost leader had not delivered and the campaign itself must be
        // taken over, and a replica cut off from its store must keep what it received.
        var struck: String?
        var notReady = false
        var deadline = Date().addingTimeInterval(300)
        while struck == nil, Date() < deadline {
            let fleetStatus = try? await harness.rpc().result("fleet.status", timeout: 2)
            let verified = (fleetStatus?["campaignStates"] as? [String: Int])?["verified"] ?? 0
            if verified >= devices / 3, let leader = leaders().first {
                #expect(verified < devices, "the fault should land mid-campaign")
                struck = leader
                switch fault {
                case .killLeader:
                    replicas[leader]?.signal(SIGKILL)
                case .pauseLeader:
                    replicas[leader]?.signal(SIGSTOP)
                    // Another replica leads once the paused one's session has timed out (deadAfter, 5 s).
                    var replaced = false
                    for _ in 0..<150 where !replaced {
                        try await Task.sleep(for: .milliseconds(200))
                        replaced = leaders().contains { $0 != leader }
                    }
                    #expect(replaced, "no replica took over from the paused leader")
                    replicas[leader]?.signal(SIGCONT)
                case .restartDatabase:
                    try PostgresServer.shared().restart(downFor: 2)
                    notReady = try await sawNotReady(ports: Array(httpPorts.values))
                case .cutReplicaFromDatabase:
                    let follower = try #require(replicas.keys.sorted().first { $0 != leader })
                    struck = follower
                    let database = String(harness.storeURL.split(separator: "/").last!)
                    let ended = Date().addingTimeInterval(5)
                    while Date() < ended {
                        try PostgresServer.shared().psql(
                            """
                            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                            WHERE application_name = 'certrot-\(follower)'
                            """, database: database)
                        if !notReady { notReady = try await sawNotReady(ports: [httpPorts[follower]!], within: 0.2) }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                case .restartBroker:
                    try harness.broker.restart(downFor: 1)
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        if fault == .restartDatabase || fault == .cutReplicaFromDatabase {
            #expect(notReady, "/readyz did not report the store's outage")
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
        // fleet.status, answered from each replica's snapshot of the stored counts (at most a second old), agrees.
        var fleetVerified = 0
        for _ in 0..<50 where fleetVerified != devices {
            let fleet = try? await harness.rpc().result("fleet.status", timeout: 2)
            fleetVerified = (fleet?["campaignStates"] as? [String: Int])?["verified"] ?? 0
            if fleetVerified != devices { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(fleetVerified == devices, "fleet.status: \(fleetVerified) verified")
        let struckReplica = try #require(struck, "no leader to strike")
        #expect(last["state"] as? String == "completed", "last status: \(last)")
        #expect((last["states"] as? [String: Int])?["verified"] == devices)
        if fault == .killLeader || fault == .pauseLeader {
            for _ in 0..<100 where leaders().filter({ $0 != struckReplica }).isEmpty {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(
                leaders().filter { $0 != struckReplica }.count == 1,
                "one other replica took the leadership: \(leaders())")
        }
        if fault == .pauseLeader {
            // Back from its pause, the former leader found it no longer led (its leadership session had been
            // ended), or had a leader's transaction fenced off.
            #expect(!leaders().contains(struckReplica), "the paused leader still claims the leadership")
        }
        let living = leaders().filter { fault != .killLeader || $0 != struckReplica }
        #expect(living.count == 1, "exactly one leader at the end: \(living)")

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
        if fault == .killLeader { #expect(senders >= 2, "bundles were sent by \(senders) replica(s)") }
        // The replicas' logs outlive the test's directory, for a look after a failure.
        let keep = FileManager.default.temporaryDirectory.appendingPathComponent("certrot-cluster-logs-\(fault)")
        try? FileManager.default.removeItem(at: keep)
        try? FileManager.default.createDirectory(at: keep, withIntermediateDirectories: true)
        for name in replicas.keys {
            try? FileManager.default.copyItem(
                atPath: harness.path("\(name).log"), toPath: keep.appendingPathComponent("\(name).log").path)
        }
        await harness.stop()
    }
}

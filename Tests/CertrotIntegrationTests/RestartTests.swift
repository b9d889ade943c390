import CertrotCore
import CertrotSimulator
import CertrotTestSupport
import Foundation
import GRDB
import Testing

@Suite(.serialized) struct RestartTests {
    func startServe(_ harness: Harness, config: String, log: String) throws -> ChildProcess {
        try ChildProcess(
            executable: certrotBinary(), arguments: ["serve", "--config", config, "--log-level", "info"],
            outputPath: log)
    }

    @Test(arguments: StoreKind.allCases)
    func daemonSIGKILLedMidRotation_resumes_withEveryDeviceVerifiedAndNoSeqReused(store: StoreKind) async throws {
        let harness = try Harness(store: store)
        let config = try harness.writeConfig(ackTimeout: "5s")
        let log = harness.path("serve.log")
        var serve = try startServe(harness, config: config, log: log)
        var options = harness.fleetOptions(devices: 200)
        // Half the fleet comes online while the daemon is down: their inventories must wait in the broker
        // for the daemon's persistent session.
        options.offlineRate = 0.5
        options.offlineDelay = 8
        let fleet = try harness.startFleet(options)

        try await harness.waitForFleet(timeout: 60) { ($0["verified"] ?? 0) >= 40 }
        serve.signal(SIGKILL)
        while serve.isRunning { usleep(10_000) }
        let atKill = fleet.snapshot().filter { $0.appliedSeq > 0 }.count
        #expect(atKill < 200, "the kill should land mid-rotation")
        try await Task.sleep(for: .seconds(4))

        serve = try startServe(harness, config: config, log: log)
        defer { serve.terminate() }
        let status = try await harness.waitForFleet(timeout: 90) { ($0["verified"] ?? 0) == 200 }
        #expect(status["devices"] as? Int == 200)

        for device in fleet.snapshot() {
            #expect(device.digest(tag: 42) == harness.newChain.sha256, "\(device.id)")
            #expect(Set(device.appliedSeqs).count == device.appliedSeqs.count, "\(device.id) applied a seq twice")
            #expect(device.appliedSeqs == device.appliedSeqs.sorted())
        }
        // The store never issued the same seq twice to a device, and seqs only grew.
        #expect(try harness.storeScalar("SELECT COUNT(*) FROM bundles") ?? 0 >= 200)
        let duplicates = try harness.storeScalar(
            "SELECT COUNT(*) FROM (SELECT device, seq FROM bundles GROUP BY device, seq HAVING COUNT(*) > 1) AS d")
        #expect(duplicates == 0)
        let behind = try harness.storeScalar(
            "SELECT COUNT(*) FROM devices d WHERE d.issued_seq < (SELECT MAX(seq) FROM bundles b WHERE b.device = d.id)"
        )
        #expect(behind == 0)
        // The audit log and the state it describes never disagree: every bundle stored has its record.
        let unrecorded = try harness.storeScalar(
            "SELECT COUNT(*) FROM bundles b WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.kind = 'bundle.signed' AND a.subject = b.jti)"
        )
        #expect(unrecorded == 0)
        let logText = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logText.components(separatedBy: "certrot starting").count == 3)
        await harness.stop()
    }

    /// Devices and kills from the environment (CERTROT_STRESS_DEVICES, CERTROT_STRESS_KILLS), small by default
    /// so `make test` stays quick; the closing note reports a 10,000-device, 20-kill run.
    @Test func daemonSIGKILLedAtRandomMoments_endsWithEveryDeviceVerified_noSeqReused_andAnIntactStore() async throws {
        let env = ProcessInfo.processInfo.environment
        let devices = env["CERTROT_STRESS_DEVICES"].flatMap(Int.init) ?? 1000
        let kills = env["CERTROT_STRESS_KILLS"].flatMap(Int.init) ?? 8
        let harness = try Harness()
        let config = try harness.writeConfig(ackTimeout: "10s")
        let log = harness.path("serve.log")
        var serve = try startServe(harness, config: config, log: log)
        var options = harness.fleetOptions(devices: devices)
        options.devicesPerConnection = 100
        options.offlineRate = 0.3
        options.offlineDelay = 5
        let fleet = try harness.startFleet(options)
        var generator = SystemRandomNumberGenerator()
        for kill in 0..<kills {
            try await waitForStarts(log, count: kill + 1)
            try await Task.sleep(for: .milliseconds(Int.random(in: 300...1500, using: &generator)))
            serve.signal(SIGKILL)
            while serve.isRunning { usleep(5_000) }
            serve = try startServe(harness, config: config, log: log)
        }
        defer { serve.terminate() }
        let status = try await harness.waitForFleet(timeout: 180) { ($0["verified"] ?? 0) == devices }
        #expect(status["devices"] as? Int == devices)
        for device in fleet.snapshot() {
            #expect(device.digest(tag: 42) == harness.newChain.sha256)
            #expect(Set(device.appliedSeqs).count == device.appliedSeqs.count, "\(device.id) applied a seq twice")
        }
        serve.terminate()
        let db = try DatabaseQueue(path: harness.path("certrot.db"))
        let integrity = try await db.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") }
        #expect(integrity == "ok")
        let duplicates = try await db.read { db in
            try Int.fetchOne(
                db,
                sql: "SELECT COUNT(*) FROM (SELECT device, seq FROM bundles GROUP BY device, seq HAVING COUNT(*) > 1)")
        }
        #expect(duplicates == 0)
        let notVerified = try await db.read {
            try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM rotations WHERE state != 'verified'")
        }
        #expect(notVerified == 0)
        let unrecorded = try await db.read { db in
            try Int.fetchOne(
                db,
                sql:
                    "SELECT COUNT(*) FROM bundles b WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.kind = 'bundle.signed' AND a.subject = b.jti)"
            )
        }
        #expect(unrecorded == 0, "every bundle stored has its audit record")
        let starts =
            try String(contentsOfFile: log, encoding: .utf8).components(separatedBy: "certrot starting").count - 1
        #expect(starts == kills + 1)
        await harness.stop()
    }
}

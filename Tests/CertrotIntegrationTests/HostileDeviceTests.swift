import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotStore
import CertrotTestSupport
import Foundation
import GRDB
import Testing

/// What a malicious device, or anyone allowed to publish device topics, can do to the daemon and its store
/// (docs/security.md, "Hostile devices and requesters").
@Suite(.serialized) struct HostileDeviceTests {
    func inventory(seq: Int = 0, digest: String) -> String {
        #"{"v":1,"seq":\#(seq),"creds":[{"tag":42,"type":0,"sha256":"\#(digest)"}]}"#
    }

    @Test func lookalikeDeviceIDs_areTwoDevices_andOnesAckCannotSettleTheOthersBundle() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        let rpc = try harness.rpc()
        _ = try await harness.waitForFleet { _ in true }
        let decomposed = "cafe\u{301}-1"  // e + combining acute
        let precomposed = "caf\u{e9}-1"
        #expect(decomposed == precomposed, "Swift Strings: canonically equivalent")
        #expect(!DeviceID.same(decomposed, precomposed))
        let oldDigest = try PEM.normalizeChain(harness.oldCA.pem).sha256
        let device = try await Peer(harness, subscribe: [Topics.bundle(decomposed)])
        try device.send(Topics.inventory(decomposed), inventory(digest: oldDigest), retain: true)
        try await device.wait { !$0.isEmpty }
        let jti = try await harness.sentBundle(of: decomposed) ?? ""
        #expect(!jti.isEmpty)

        // The lookalike acks the other's bundle, then reports an inventory of its own.
        let attacker = try await Peer(harness)
        try attacker.send(Topics.ack(precomposed), #"{"jti":"\#(jti)","status":"rejected"}"#)
        try attacker.send(Topics.inventory(precomposed), inventory(digest: oldDigest), retain: true)
        let status =
            try await harness.eventually({ try await rpc.result("fleet.status") }) {
                $0["devices"] as? Int == 2 && ($0["dropped"] as? [String: Int])?["foreign_ack"] == 1
            } ?? [:]
        #expect(status["devices"] as? Int == 2)
        #expect((status["dropped"] as? [String: Int])?["foreign_ack"] == 1)
        let victim = try await rpc.result("device.status", params: ["device": decomposed])
        #expect(((victim["rotations"] as? [[String: Any]])?.first?["state"]) as? String == "sent")
        let other = try await rpc.result("device.status", params: ["device": precomposed])
        #expect(other["device"] as? String == precomposed)
        #expect((other["device"] as? String).map { DeviceID.same($0, precomposed) } == true)
        device.stop()
        attacker.stop()
        await harness.stop()
    }

    @Test func aFlappingDevice_getsAtMostOneBundlePerBackoff_andCannotGrowTheStorePastItsBound() async throws {
        let harness = try Harness()
        let config = try harness.writeConfig(retryBase: "1s", extra: "retention: {history: 20, bundles: 3}")
        try harness.startDaemon(configPath: config)
        let rpc = try harness.rpc()
        _ = try await harness.waitForFleet { _ in true }
        let oldDigest = try PEM.normalizeChain(harness.oldCA.pem).sha256
        let newDigest = harness.newChain.sha256
        let flapper = try await Peer(harness)
        let started = Date()
        // 2,000 inventories, alternating between holding the target and not, over ~3 s.
        for index in 0..<2000 {
            try flapper.send(Topics.inventory("flap-1"), inventory(digest: index % 2 == 0 ? oldDigest : newDigest))
            if index % 100 == 99 { try await Task.sleep(for: .milliseconds(150)) }
        }
        try flapper.send(Topics.inventory("flap-1"), inventory(seq: 1, digest: oldDigest))
        // Every inventory handled (taken, or superseded in the queue by a newer one): the last one is stored.
        for _ in 0..<200 {
            let status = try await rpc.result("device.status", params: ["device": "flap-1"])
            if status["reportedSeq"] as? Int == 1 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let seconds = Date().timeIntervalSince(started)
        let bundlesIssued = try harness.storeScalar("SELECT MAX(seq) FROM bundles WHERE device = 'flap-1'") ?? 0
        let bundlesKept = try harness.storeScalar("SELECT COUNT(*) FROM bundles WHERE device = 'flap-1'") ?? 0
        let history = try harness.storeScalar("SELECT COUNT(*) FROM history WHERE device = 'flap-1'") ?? 0
        // One bundle at first, then at most one per second of flapping (retry base 1 s).
        #expect(bundlesIssued >= 1)
        #expect(Double(bundlesIssued) <= 3 + seconds, "\(bundlesIssued) bundles in \(seconds) s")
        #expect(bundlesKept <= 3 + 1, "retention.bundles 3, besides the one a rotation refers to")
        // The history of one rotation cycle comes on top of the retained 20.
        #expect(history <= 20 + 6, "\(history) history rows")
        flapper.stop()
        await harness.stop()
    }

    @Test func unadmittedDeviceIDs_areDropped_andNothingOfThemIsStored() async throws {
        let harness = try Harness()
        let config = try harness.writeConfig(extra: "admission: {idPattern: \"dev-*\"}")
        try harness.startDaemon(configPath: config)
        _ = try harness.startFleet(harness.fleetOptions(devices: 3))
        let fake = try await Peer(harness)
        let digest = String(repeating: "b", count: 64)
        for index in 0..<2000 {
            try fake.send(Topics.inventory("fake-\(index)"), inventory(digest: digest), retain: true)
        }
        try fake.send(Topics.ack("fake-1"), #"{"jti":"00","status":"applied"}"#)
        let status = try await harness.waitForFleet { ($0["verified"] ?? 0) == 3 }
        let dropped =
            try await harness.eventually({
                (try await harness.rpc().result("fleet.status")["dropped"] as? [String: Int]) ?? [:]
            }) { $0["device_not_admitted", default: 0] >= 2001 } ?? [:]
        #expect(dropped["device_not_admitted"] == 2001)
        #expect(status["devices"] as? Int == 3)
        #expect(try harness.storeScalar("SELECT COUNT(*) FROM devices WHERE id LIKE 'fake-%'") == 0)
        fake.stop()
        await harness.stop()
    }

    @Test func inventoriesQueuedForOneDevice_collapseToTheNewest() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        let rpc = try harness.rpc()
        _ = try await harness.waitForFleet { _ in true }
        let newDigest = harness.newChain.sha256
        let device = try await Peer(harness)
        for seq in 0..<3000 { try device.send(Topics.inventory("burst-1"), inventory(seq: seq, digest: newDigest)) }
        var reported: Int?
        for _ in 0..<200 {
            reported = (try? await rpc.result("device.status", params: ["device": "burst-1"]))?["reportedSeq"] as? Int
            if reported == 2999 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(reported == 2999, "the newest inventory is the one kept")
        device.stop()
        await harness.stop()
    }

    @Test(arguments: StoreKind.allCases)
    func aSecondDaemonOnTheSameStore_refusesToStart_namingTheStoreAndTheHolder(store: StoreKind) async throws {
        let harness = try Harness(store: store)
        try harness.startDaemon()
        _ = try await harness.waitForFleet { _ in true }
        let settings = try DaemonSettings.resolve(try CertrotConfig.load(path: try harness.writeConfig()))
        let second = CertrotDaemon(settings: settings, logger: harness.logger)
        await #expect {
            try await second.run()
        } throws: { error in
            let text = "\(error)"
            switch store {
            case .sqlite:
                return text.contains("in use") && text.contains(harness.path("certrot.db"))
                    && text.contains("pid \(getpid())")
            case .postgres:
                return text.contains("in use") && text.contains("leadership lock") && !text.contains("password")
            }
        }
        // Once the first has stopped, the store is free.
        await harness.stopDaemon()
        try harness.startDaemon()
        _ = try await harness.waitForFleet { _ in true }
        await harness.stop()
    }

    @Test func storeURLsInMessages_carryNoPassword() {
        #expect(
            PostgresStore.redacted("postgres://certrot:s3cret@db:5432/certrot")
                == "postgres://certrot:***@db:5432/certrot")
        #expect(PostgresStore.redacted("postgres://certrot@db/certrot") == "postgres://certrot@db/certrot")
        #expect(PostgresStore.redacted("sqlite:/var/lib/certrot.db") == "sqlite:/var/lib/certrot.db")
    }

    /// A store 200 devices rotated in, the daemon stopped, everything in the main file (not the WAL): its path and
    /// an open connection to it.
    func storeAfterARotation(_ harness: Harness) async throws -> (path: String, DatabaseQueue) {
        try harness.startDaemon()
        _ = try harness.startFleet(harness.fleetOptions(devices: 200))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 200 }
        await harness.stopDaemon()
        let path = harness.path("certrot.db")
        let queue = try DatabaseQueue(path: path)
        try await queue.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        return (path, queue)
    }

    @Test func aDamagedStore_isRefusedAtStart_withWhatToDo() async throws {
        let harness = try Harness()
        // 20 pages past the header overwritten with noise.
        let (path, queue) = try await storeAfterARotation(harness)
        try queue.close()
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        let pages = Int(try handle.seekToEnd()) / 4096
        try #require(pages > 22)
        var random = SplitMix64(seed: 7)
        for page in (2..<pages).shuffled(using: &random).prefix(20) {
            try handle.seek(toOffset: UInt64(page * 4096))
            try handle.write(contentsOf: Data((0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }))
        }
        try handle.close()
        let settings = try DaemonSettings.resolve(try CertrotConfig.load(path: try harness.writeConfig()))
        await #expect {
            try await CertrotDaemon(settings: settings, logger: harness.logger).run()
        } throws: { error in
            "\(error)".contains("damaged") && "\(error)".contains("backup")
        }
        await harness.stop()
    }

    /// The integrity check runs beside the start (#35 §3): damage the start does not read (the history table's
    /// pages) is found by the check, which stops the daemon with what to do, and readiness says why.
    @Test func damageTheStartDoesNotRead_isFoundBesideIt_andStopsTheDaemon() async throws {
        let harness = try Harness()
        let (path, queue) = try await storeAfterARotation(harness)
        // Every leaf page of the history table, found by walking it: overwritten with noise.
        let pages = try await queue.read { db in
            try Int.fetchAll(db, sql: "SELECT pageno FROM dbstat WHERE name = 'history' AND pagetype = 'leaf'")
        }
        try queue.close()
        try #require(pages.count > 2, "history spans pages")
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        var random = SplitMix64(seed: 35)
        for page in pages {
            try handle.seek(toOffset: UInt64((page - 1) * 4096))
            try handle.write(contentsOf: Data((0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }))
        }
        try handle.close()
        let settings = try DaemonSettings.resolve(try CertrotConfig.load(path: try harness.writeConfig()))
        let daemon = try CertrotDaemon(settings: settings, logger: harness.logger)
        // A daemon the check did not stop is cancelled after a minute: it then returns without an error.
        let running = Task { try await daemon.run() }
        let watchdog = Task {
            try await Task.sleep(for: .seconds(60))
            running.cancel()
        }
        let outcome = await running.result
        watchdog.cancel()
        #expect(throws: (any Error).self) { try outcome.get() }
        if case .failure(let error) = outcome {
            #expect("\(error)".contains("damaged") && "\(error)".contains("backup"), "\(error)")
        }
        #expect(daemon.observability.notReadyReason?.contains("the store is damaged") == true)
        await harness.stop()
    }
}

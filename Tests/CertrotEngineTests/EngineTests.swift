import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Synchronization
import Testing

/// The engine's decisions, through `EngineHarness`: the real engine on a real SQLite store, a recording publisher
/// and a manual clock. No broker, no sleeps.
@Suite struct EngineTests {
    @Test func aDeviceWithoutTheTarget_getsOneBundle_sentOnPUBACK_appliedOnAck_verifiedByItsInventory() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        let jti = try #require(h.bundles(to: "d1").first)
        #expect(h.bundles(to: "d1").count == 1)
        #expect(try h.rotations("d1").first?.state == .pending)
        await h.acknowledgePublishes()
        #expect(try h.rotations("d1").first?.state == .sent)
        await h.ack("d1", jti: jti, .applied)
        #expect(try h.rotations("d1").first?.state == .applied)
        await h.inventory("d1", holding: h.newCA.sha256, seq: 1)
        let rotation = try #require(try h.rotations("d1").first)
        #expect(rotation.state == .verified && rotation.seq == 1)
        #expect(h.bundles(to: "d1").count == 1, "nothing more is sent")
    }

    @Test func aFailedWrite_isRetriedWithBackoff_asANewBundleWithTheNextSeq() async throws {
        let h = try EngineHarness(retry: "{base: 10s, factor: 2, cap: 60s, attempts: 3}")
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        await h.acknowledgePublishes()
        let first = try #require(h.bundles(to: "d1").first)
        await h.ack("d1", jti: first, .failed, code: 518)
        let failed = try #require(try h.rotations("d1").first)
        #expect(failed.state == .failed && failed.nextAttemptAt == h.clock.now + 10)
        await h.advance(9)
        #expect(h.bundles(to: "d1").count == 1, "not before the backoff")
        await h.advance(1)
        let bundles = h.bundles(to: "d1")
        #expect(bundles.count == 2 && bundles[1] != first)
        #expect(try h.rotations("d1").first?.seq == 2)
        // The second failure waits twice as long.
        await h.acknowledgePublishes()
        await h.ack("d1", jti: bundles[1], .failed)
        #expect(try h.rotations("d1").first?.nextAttemptAt == h.clock.now + 20)
    }

    @Test func noAck_timesOutAfterAckTimeout_fromThePUBACK_thenRetries() async throws {
        let h = try EngineHarness(ackTimeout: "60s", retry: "{base: 5s, factor: 2, cap: 60s, attempts: 3}")
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        await h.advance(30)
        await h.acknowledgePublishes()  // the timer runs from the broker's acknowledgement of the last part
        await h.advance(59)
        #expect(try h.rotations("d1").first?.state == .sent)
        await h.advance(1)
        #expect(try h.rotations("d1").first?.state == .timedOut)
        await h.advance(5)
        #expect(h.bundles(to: "d1").count == 2)
    }

    @Test func withoutAPUBACK_theAckTimeoutRunsFromTheIssue() async throws {
        let h = try EngineHarness(ackTimeout: "60s")
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        await h.advance(59)
        #expect(try h.rotations("d1").first?.state == .pending)
        await h.advance(1)
        #expect(try h.rotations("d1").first?.state == .timedOut)
    }

    @Test func afterARestart_anUndeliveredBundle_isSentAgain_sameJTIAndSeq() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        let jti = try #require(h.bundles(to: "d1").first)  // published, never acknowledged by the broker
        try await h.restart()
        #expect(h.bundles(to: "d1").isEmpty)
        await h.connect()
        #expect(h.bundles(to: "d1") == [jti])
        #expect(try h.rotations("d1").first?.seq == 1)
        // A delivered one is not.
        await h.acknowledgePublishes()
        try await h.restart()
        await h.connect()
        #expect(h.bundles(to: "d1").isEmpty)
    }

    /// More bundles to send again than one transaction takes (``ResumeBacklog/chunk``): they go out a chunk a
    /// transaction right after the connection, each exactly once, with its own jti and seq (#35 §3: the first no
    /// longer waits for all of them to be read and saved).
    @Test func afterARestart_manyUndeliveredBundles_goOutInChunks_eachOnce() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        let devices = (0..<(2 * ResumeBacklog.chunk + 37)).map { "d\($0)" }
        for device in devices { await h.inventory(device, holding: h.oldCA.sha256) }
        var issued: [String: String] = [:]
        for device in devices { issued[device] = try #require(h.bundles(to: device).first) }
        try await h.restart()
        await h.advance(1)
        // When the first bundle goes out again, the engine has read and saved one chunk, not all of them.
        let touchedAtFirstPublish = Mutex<Int?>(nil)
        let now = h.clock.now
        nonisolated(unsafe) let harness = h  // read from the publish call, on the engine's own path
        h.publisher.onPublish.withLock {
            $0 = { _ in
                guard touchedAtFirstPublish.withLock({ $0 }) == nil else { return }
                let touched = devices.filter { (try? harness.rotations($0).first?.issuedAt) == now }.count
                touchedAtFirstPublish.withLock { $0 = touched }
            }
        }
        await h.connect()
        let touched = try #require(touchedAtFirstPublish.withLock { $0 })
        #expect(touched > 0 && touched <= ResumeBacklog.chunk, "\(touched) of \(devices.count) saved before the first")
        for device in devices {
            #expect(h.bundles(to: device) == [issued[device]], "\(device)")
            #expect(try h.rotations(device).first?.seq == 1)
        }
        // Delivered now: a second restart has nothing to send again.
        await h.acknowledgePublishes()
        try await h.restart()
        await h.connect()
        #expect(devices.allSatisfy { h.bundles(to: $0).isEmpty })
    }

    /// A tick in the same batch as the connection, after longer than the ack timeout down: the bundles still waiting
    /// for their chunk are not timed out by it (their timers start when they go out), and each goes out once, as when
    /// one transaction resent them all (ClusterTests caught it: a takeover's tick re-issued them, two bundles each).
    @Test func aTickInTheConnectionsBatch_leavesTheBundlesWaitingToBeResent() async throws {
        let h = try EngineHarness(ackTimeout: "60s")
        defer { h.stop() }
        await h.connect()
        let devices = (0..<(ResumeBacklog.chunk + 50)).map { "d\($0)" }
        for device in devices { await h.inventory(device, holding: h.oldCA.sha256) }
        var issued: [String: String] = [:]
        for device in devices { issued[device] = try #require(h.bundles(to: device).first) }
        try await h.restart()
        h.clock.advance(120)
        await h.deliver([.mqtt(.connected(sessionPresent: false)), .tick])
        for device in devices {
            #expect(h.bundles(to: device) == [issued[device]], "\(device)")
            #expect(try h.rotations(device).first?.state == .pending, "\(device)")
        }
    }

    /// The device's inventory comes just after its bundle went out: it may have crossed the bundle, or the bundle
    /// reached the broker before the device had subscribed again and was dropped (a broker restart). Without an ack
    /// by then, the same bundle goes again `retry.base` after it went out, not only after the ack timeout.
    @Test func anInventoryJustAfterTheBundle_withoutAnAck_getsTheSameBundleAgainAfterTheRetryBase() async throws {
        let h = try EngineHarness(retry: "{base: 10s, factor: 2, cap: 60s, attempts: 3}")
        defer { h.stop() }
        await h.connect()
        for device in ["d1", "d2"] { await h.inventory(device, holding: h.oldCA.sha256) }
        await h.acknowledgePublishes()
        let jti = try #require(h.bundles(to: "d1").first)
        await h.advance(1)
        for device in ["d1", "d2"] { await h.inventory(device, holding: h.oldCA.sha256) }
        #expect(h.parts(to: "d1").count == 1, "not at once")
        let d2 = try #require(h.bundles(to: "d2").first)
        await h.ack("d2", jti: d2, .applied)
        await h.advance(8)
        #expect(h.parts(to: "d1").count == 1)
        await h.advance(1)
        #expect(h.parts(to: "d1").map(\.jti) == [jti, jti], "the same bundle, once more")
        let rotation = try #require(try h.rotations("d1").first)
        #expect(rotation.state == .sent && rotation.resends == 1 && rotation.sentAt == h.clock.now)
        #expect(h.parts(to: "d2").count == 1, "an ack came first: nothing again")
        await h.advance(30)
        #expect(h.parts(to: "d1").count == 2, "once")
        await h.ack("d1", jti: jti, .applied)
        #expect(try h.rotations("d1").first?.state == .applied)
    }

    @Test func aFlappingDevice_getsABundle_atMostOncePerRetryBase() async throws {
        let h = try EngineHarness(retry: "{base: 30s, factor: 2, cap: 60s, attempts: 3}")
        defer { h.stop() }
        await h.connect()
        for index in 0..<200 {
            await h.inventory("d1", holding: index % 2 == 0 ? h.oldCA.sha256 : h.newCA.sha256)
            if index % 20 == 19 { await h.advance(1) }
        }
        #expect(h.bundles(to: "d1").count == 1, "ten seconds of flapping")
        await h.advance(25)
        await h.inventory("d1", holding: h.newCA.sha256)
        await h.inventory("d1", holding: h.oldCA.sha256)
        #expect(h.bundles(to: "d1").count == 2, "past the retry base: a new bundle")
    }

    @Test func aDeviceThatReportsKeys_isSentTheNextSigningKey_andLaterBundlesAreSignedWithIt() async throws {
        let next = SigningKey.generate()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-next-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try KeyFile.write(next, to: dir.appendingPathComponent("next.pem").path)
        let h = try EngineHarness(extra: "keyRotation: {nextKey: \(dir.appendingPathComponent("next.pem").path)}")
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.newCA.sha256, keys: [h.key.kid])
        let rotation = try #require(try h.rotations("d1").first)
        #expect(rotation.target == "trust-key" && rotation.sha256 == next.kid)
        #expect(h.bundles(to: "d1").count == 1)
        // Once it trusts both, a new target's bundle is signed with the next key.
        await h.acknowledgePublishes()
        await h.ack("d1", jti: h.bundles(to: "d1")[0], .applied)
        await h.inventory("d1", holding: h.oldCA.sha256, seq: 1, keys: [h.key.kid, next.kid])
        let parts = h.parts(to: "d1").filter { $0.jti == h.bundles(to: "d1").last }
        let jws = parts.sorted { $0.part < $1.part }.map(\.data).joined()
        #expect(h.bundles(to: "d1").count == 2)
        #expect((try? JWS.verify(jws, keys: [next.publicKey])) != nil)
        #expect((try? JWS.verify(jws, keys: [h.key.publicKey])) == nil)
    }

    // MARK: Campaigns

    func result(_ reply: [String: Any]) throws -> [String: Any] {
        try #require(reply["result"] as? [String: Any], "\(reply)")
    }

    /// Every device in flight acks `applied` and reports the campaign's chain.
    func completeInFlight(_ h: EngineHarness, devices: [String]) async throws {
        await h.acknowledgePublishes()
        for device in devices {
            guard let rotation = try h.rotations(device).first(where: { $0.isInFlight }), let jti = rotation.jti else {
                continue
            }
            await h.ack(device, jti: jti, .applied)
            await h.inventory(device, holding: h.newCA.sha256, seq: rotation.seq ?? 0)
        }
    }

    @Test func aCampaign_admitsWaveByWave_eachWhenThePreviousIsVerified() async throws {
        let h = try EngineHarness(targets: "[]")
        defer { h.stop() }
        await h.connect()
        let devices = (1...10).map { "d\($0)" }
        for device in devices { await h.inventory(device, holding: h.oldCA.sha256) }
        let created = try result(
            try await h.rpc(
                "campaign.create",
                [
                    "name": "rollover", "targets": [["tag": 42, "credential": "new-ca"]], "select": ["all": true],
                    "waves": ["20%", "100%"],
                ]))
        let id = try #require(created["id"] as? String)
        #expect(created["devices"] as? Int == 10)
        await h.advance(1)
        let firstWave = devices.filter { !h.bundles(to: $0).isEmpty }
        #expect(firstWave.count == 2, "20% of 10")
        await h.advance(1)
        #expect(devices.filter { !h.bundles(to: $0).isEmpty }.count == 2, "the next wave waits for this one")
        try await completeInFlight(h, devices: firstWave)
        await h.advance(1)
        await h.advance(1)
        #expect(devices.filter { !h.bundles(to: $0).isEmpty }.count == 10)
        try await completeInFlight(h, devices: devices)
        await h.advance(1)
        let status = try result(try await h.rpc("campaign.status", ["id": id]))
        #expect(status["state"] as? String == "completed", "\(status)")
    }

    @Test func aPausedCampaign_admitsNobody_untilResumed_andAnAbortedOneCancelsWhatItHasNotSent() async throws {
        let h = try EngineHarness(targets: "[]")
        defer { h.stop() }
        await h.connect()
        let devices = (1...4).map { "d\($0)" }
        for device in devices { await h.inventory(device, holding: h.oldCA.sha256) }
        let id = try #require(
            try result(
                try await h.rpc(
                    "campaign.create",
                    [
                        "name": "p", "targets": [["tag": 42, "credential": "new-ca"]], "select": ["all": true],
                        "waves": [1, 4], "pauseAfterWave": true,
                    ]))["id"] as? String)
        await h.advance(1)
        let first = devices.filter { !h.bundles(to: $0).isEmpty }
        #expect(first.count == 1)
        try await completeInFlight(h, devices: first)
        await h.advance(1)
        await h.advance(1)
        #expect(try result(try await h.rpc("campaign.status", ["id": id]))["state"] as? String == "paused")
        await h.advance(10)
        #expect(devices.filter { !h.bundles(to: $0).isEmpty }.count == 1, "paused: nobody admitted")
        _ = try result(try await h.rpc("campaign.resume", ["id": id]))
        await h.advance(1)
        await h.advance(1)
        #expect(devices.filter { !h.bundles(to: $0).isEmpty }.count == 4)
        let aborted = try result(try await h.rpc("campaign.abort", ["id": id]))
        #expect(aborted["state"] as? String == "aborted")
    }

    @Test func aWaveOverItsErrorThreshold_pausesTheCampaign_andResumingAcceptsItsResults() async throws {
        let h = try EngineHarness(targets: "[]")
        defer { h.stop() }
        await h.connect()
        let devices = (1...10).map { "d\($0)" }
        for device in devices { await h.inventory(device, holding: h.oldCA.sha256) }
        let id = try #require(
            try result(
                try await h.rpc(
                    "campaign.create",
                    [
                        "name": "t", "targets": [["tag": 42, "credential": "new-ca"]], "select": ["all": true],
                        "waves": ["50%", "100%"], "errorThreshold": 0.2, "minExecuted": 2, "retryAttempts": 1,
                    ]))["id"] as? String)
        await h.advance(1)
        let first = devices.filter { !h.bundles(to: $0).isEmpty }
        #expect(first.count == 5)
        await h.acknowledgePublishes()
        // Two of five reject the chain: 40 % > 20 %.
        for (index, device) in first.enumerated() {
            let rotation = try #require(try h.rotations(device).first { $0.isInFlight })
            if index < 2 {
                await h.ack(device, jti: try #require(rotation.jti), .rejected, code: -22)
            } else {
                await h.ack(device, jti: try #require(rotation.jti), .applied)
                await h.inventory(device, holding: h.newCA.sha256, seq: rotation.seq ?? 0)
            }
        }
        await h.advance(1)
        var status = try result(try await h.rpc("campaign.status", ["id": id]))
        #expect(status["state"] as? String == "paused")
        #expect((status["reason"] as? String)?.contains("2 of 5 devices sent a bundle were rejected") == true)
        await h.advance(5)
        #expect(devices.filter { !h.bundles(to: $0).isEmpty }.count == 5, "paused: the second wave waits")
        _ = try result(try await h.rpc("campaign.resume", ["id": id]))
        await h.advance(1)
        await h.advance(1)
        status = try result(try await h.rpc("campaign.status", ["id": id]))
        #expect(status["currentWave"] as? Int == 1, "\(status)")
        #expect(devices.filter { !h.bundles(to: $0).isEmpty }.count == 10, "the accepted wave lets the next start")
    }
}

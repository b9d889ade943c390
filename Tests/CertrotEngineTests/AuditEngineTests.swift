import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// The audit log as the engine writes it: in the transaction of what it records, chained, checkpointed.
@Suite struct AuditEngineTests {
    func records(_ h: EngineHarness) throws -> [AuditRecord] {
        try h.read { tx in try tx.auditRecords(after: 0, limit: 1000, since: nil, device: nil) }
    }

    func body(_ record: AuditRecord) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(record.body.utf8)) as? [String: Any]) ?? [:]
    }

    @Test func bundlesOperatorRequestsAndCampaignStates_areRecorded_chained_andCheckpointed() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        let jti = try #require(h.bundles(to: "d1").first)
        var log = try records(h)
        let signed = try #require(log.first)
        #expect(signed.kind == .bundleSigned && signed.device == "d1" && signed.subject == jti && signed.seq == 1)
        let ops = body(signed)["ops"] as? [[String: Any]]
        #expect(ops?.first?["tag"] as? Int == 42 && ops?.first?["sha256"] as? String == h.newCA.sha256)
        #expect(ops?.first?["pem"] == nil, "the credential's digest, not its bytes")
        #expect(body(signed)["kid"] as? String == h.key.kid && body(signed)["seq"] as? Int == 1)

        // An operator's campaign and its pause: the requests and the states they moved the campaign through.
        let created = try await h.rpc(
            "campaign.create",
            ["name": "c1", "targets": [["tag": 43, "credential": "new-ca"]], "select": ["all": true]])
        let id = try #require((created["result"] as? [String: Any])?["id"] as? String)
        _ = try await h.rpc("campaign.pause", ["id": id, "reason": "night"])
        _ = try await h.rpc("campaign.pause", ["id": id])  // refused: already paused
        log = try records(h)
        let requests = log.filter { $0.kind == .operatorRequest }
        #expect(requests.map(\.subject) == ["campaign.create", "campaign.pause", "campaign.pause"])
        #expect(
            body(requests[0])["result"] as? String == "ok \(id)"
                && body(requests[0])["operator"] as? String == "unsigned")
        #expect((body(requests[2])["result"] as? String)?.hasPrefix("error") == true)
        let states = log.filter { $0.kind == .campaignState && $0.subject == id }.map { body($0)["state"] as? String }
        #expect(states == ["running", "paused"])
        #expect(!log.contains { $0.kind == .operatorRequest && $0.subject == "fleet.status" }, "reads are not recorded")

        // A tick signs the head; the whole log verifies under the bundle-signing key.
        await h.advance(1)
        log = try records(h)
        #expect(log.last?.kind == .checkpoint)
        let summary = try AuditChain.verify(log, keys: [h.key.publicKey], now: h.clock.now, maxCheckpointAge: 60)
        #expect(summary.unsigned == 0 && summary.records == log.count)

        // audit.list pages through it.
        let page = try #require(try await h.rpc("audit.list", ["limit": 2])["result"] as? [String: Any])
        #expect((page["records"] as? [[String: Any]])?.count == 2 && page["next"] as? Int == 2)
        let device = try #require(try await h.rpc("audit.list", ["device": "d1"])["result"] as? [String: Any])
        #expect((device["records"] as? [[String: Any]])?.allSatisfy { $0["device"] as? String == "d1" } == true)
        #expect(device["next"] is NSNull)
        let bad = try await h.rpc("audit.list", ["limit": 0])
        #expect((bad["error"] as? [String: Any])?["code"] as? Int == -32602)
    }

    @Test func aRestart_goesOnWithTheSameChain_andSignsWhatWasLeftUnsigned() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        try await h.restart()
        await h.connect()
        await h.inventory("d2", holding: h.oldCA.sha256)
        await h.advance(1)
        let log = try records(h)
        #expect(log.filter { $0.kind == .bundleSigned }.map(\.device) == ["d1", "d2"])
        #expect(throws: Never.self) {
            try AuditChain.verify(log, keys: [h.key.publicKey], now: h.clock.now, maxCheckpointAge: 60)
        }
    }

    @Test func aQuietDaemon_signsAHeartbeatCheckpointEveryHour_andNothingElse() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        await h.inventory("d1", holding: h.oldCA.sha256)
        let jti = try #require(h.bundles(to: "d1").first)
        await h.acknowledgePublishes()
        await h.ack("d1", jti: jti, .applied)
        await h.inventory("d1", holding: h.newCA.sha256, seq: 1)
        await h.advance(1)
        let signed = try records(h)
        #expect(signed.map(\.kind) == [.bundleSigned, .checkpoint])
        await h.advance(60)
        #expect(try records(h).count == 2, "nothing to sign")
        await h.advance(3600)
        let later = try records(h)
        #expect(later.count == 3 && later.last?.kind == .checkpoint)
        #expect(throws: Never.self) {
            try AuditChain.verify(later, keys: [h.key.publicKey], now: h.clock.now, maxCheckpointAge: 7200)
        }
    }
}

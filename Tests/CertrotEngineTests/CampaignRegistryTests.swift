import CertrotCore
import CertrotServer
import CertrotStore
import Foundation
import Testing

/// The campaign registry alone, on a real SQLite store: member counts counted once and then kept up to date,
/// recounted when stale; per-campaign policies; the settle rate.
@Suite struct CampaignRegistryTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("registry-\(UUID().uuidString)")

    func withStore(_ body: (SQLiteStore) throws -> Void) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: dir.appendingPathComponent("db").path)
        defer { store.close() }
        try body(store)
    }

    func member(_ device: String, _ state: MemberState, wave: Int = 0) -> CampaignMember {
        CampaignMember(
            campaign: "c", device: device, wave: wave, state: state, settled: state == .verified, reason: nil,
            updatedAt: 0)
    }

    @Test func memberCounts_areCountedOnce_keptUpToDateBySaves_andRecountedWhenStale() throws {
        try withStore { store in
            let registry = CampaignRegistry()
            try store.write { tx in
                for n in 1...3 { try tx.saveMember(member("d\(n)", .waiting)) }
                #expect(try registry.memberCounts("c", now: 0, tx: tx)[0]?.waiting == 3)
                // Saved through the registry: the kept counts follow without counting again.
                try registry.saveMember(member("d1", .pending), previous: member("d1", .waiting), tx: tx)
                let kept = try registry.memberCounts("c", now: 5, tx: tx)[0]
                #expect(kept?.waiting == 2 && kept?.states[.pending] == 1)
                // Written behind its back (another replica): seen once the counts are stale.
                try tx.saveMember(member("d2", .verified))
                #expect(try registry.memberCounts("c", now: 9, tx: tx)[0]?.verified == 0)
                let recounted = try registry.memberCounts("c", now: 10, tx: tx)[0]
                #expect(recounted?.verified == 1 && recounted?.settled == 1)
                registry.countsMaxAge = 1
                try tx.saveMember(member("d3", .verified))
                #expect(try registry.memberCounts("c", now: 11, tx: tx)[0]?.verified == 2, "a cluster recounts sooner")
                registry.forgetCounts()
                try tx.saveMember(member("d4", .waiting, wave: 1))
                #expect(try registry.memberCounts("c", now: 11, tx: tx)[1]?.waiting == 1)
            }
        }
    }

    @Test func aCampaignsPolicy_overridesTheBase_forItsTargetsOnly() {
        let registry = CampaignRegistry()
        var policy = RolloutPolicy()
        policy.ackTimeout = 30
        policy.retryAttempts = 2
        var campaign = Campaign(id: "c", name: "n", now: 0, targets: [], select: .all, policy: policy, origin: "rpc")
        campaign.sequence = 4
        registry.put(campaign, now: 0)
        let base = RotationPolicy()
        #expect(registry.rotationPolicy(for: .campaign(id: "c", index: 0), base: base).ackTimeout == 30)
        #expect(registry.rotationPolicy(for: .campaign(id: "c", index: 0), base: base).retry.attempts == 2)
        #expect(registry.rotationPolicy(for: "root", base: base) == base)
        #expect(registry.shortestAckTimeout(base: 600) == 30 && registry.shortestAckTimeout(base: 10) == 10)
        #expect(registry.nextSequence == 5)
        #expect(registry.held.isEmpty)
        try? campaign.pause(reason: "x")
        registry.put(campaign, now: 0)
        #expect(registry.held == ["c."])
    }

    @Test func theSettleRate_isMeasuredOverTheLast30Seconds() {
        let registry = CampaignRegistry()
        #expect(registry.throughput("c", done: 0, now: 100) == 0)
        #expect(registry.throughput("c", done: 5, now: 100.5) == 0, "two samples a second apart are needed")
        #expect(registry.throughput("c", done: 20, now: 102) == 10)
        #expect(registry.throughput("c", done: 20, now: 140) == 0, "older samples are dropped")
    }
}

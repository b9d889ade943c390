import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// What the console asks of the engine: `fleet.risk` (which devices will not be back before the chain they hold
/// expires) and `device.list` by ID prefix.
@Suite struct ConsoleQueryTests {
    @Test func aDeviceGoneLongerThanItsChainHasLeft_isAtRisk_byWeek_untilItHoldsTheNewChain() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        let day: Int64 = 86400
        // The old CA (20 days) is what both hold; the target is the new CA (700 days).
        await h.inventory("gone", holding: h.oldCA.sha256)
        await h.inventory("here", holding: h.oldCA.sha256)
        h.clock.advance(12 * day)
        await h.inventory("here", holding: h.oldCA.sha256)
        // 12 days later: "gone" was last seen 12 days ago and its chain has about 8 days left; "here" was just seen.
        var risk = try await h.rpc("fleet.risk")["result"] as? [String: Any] ?? [:]
        let target = try #require((risk["targets"] as? [String: [String: Any]])?["broker-ca"], "\(risk)")
        #expect(target["atRisk"] as? Int == 1 && target["expired"] as? Int == 0, "\(target)")
        #expect(target["byWeek"] as? [Int] == [0, 1], "expires in its second week: \(target)")
        let devices = risk["devices"] as? [[String: Any]] ?? []
        #expect(devices.map { $0["device"] as? String } == ["gone"] && devices.first?["week"] as? Int == 2)
        // Past the old CA's expiry "here" is at risk too, as expired; once "gone" holds the new chain it is not.
        h.clock.advance(10 * day)
        await h.inventory("gone", holding: h.newCA.sha256, seq: 1)
        risk = try await h.rpc("fleet.risk", ["limit": 5])["result"] as? [String: Any] ?? [:]
        let after = try #require((risk["targets"] as? [String: [String: Any]])?["broker-ca"])
        #expect(after["atRisk"] as? Int == 1 && after["expired"] as? Int == 1, "\(after)")
        #expect((risk["devices"] as? [[String: Any]])?.map { $0["device"] as? String } == ["here"])
        let refused = try await h.rpc("fleet.risk", ["limit": 5000])["error"] as? [String: Any]
        #expect(refused?["code"] as? Int == -32602)
    }

    @Test func deviceList_byPrefix_listsExactlyTheDevicesWhoseIDStartsWithIt_theExactOneFirst() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        for id in ["ab", "ab-1", "ab-2", "abc", "aa", "b", "ab-3"] { await h.inventory(id, holding: h.oldCA.sha256) }
        func list(_ params: [String: Any]) async throws -> (ids: [String], next: String?) {
            let result = try await h.rpc("device.list", params)["result"] as? [String: Any] ?? [:]
            return (
                (result["devices"] as? [[String: Any]] ?? []).compactMap { $0["device"] as? String },
                result["next"] as? String
            )
        }
        #expect(try await list(["prefix": "ab"]).ids == ["ab", "ab-1", "ab-2", "ab-3", "abc"])
        #expect(try await list(["prefix": "ab-"]).ids == ["ab-1", "ab-2", "ab-3"])
        #expect(try await list(["prefix": "zz"]).ids.isEmpty)
        let page = try await list(["prefix": "ab", "limit": 2])
        #expect(page.ids == ["ab", "ab-1"] && page.next == "ab-1")
        let rest = try await list(["prefix": "ab", "after": "ab-1"])
        #expect(rest.ids == ["ab-2", "ab-3", "abc"] && rest.next == nil)
        let refused = try await h.rpc("device.list", ["prefix": ""])["error"] as? [String: Any]
        #expect(refused?["code"] as? Int == -32602)
    }
}

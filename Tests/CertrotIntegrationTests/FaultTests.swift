import CertrotCore
import CertrotMQTT
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

@Suite(.serialized) struct FaultTests {
    @Test func brokerRestartMidRotation_everyDeviceStillEndsVerified_withNoSeqReused() async throws {
        let broker = try Broker(persistent: true)
        let harness = try Harness(broker: broker)
        try harness.startDaemon()
        var options = harness.fleetOptions(devices: 200)
        options.offlineRate = 0.4
        options.offlineDelay = 6
        let fleet = try harness.startFleet(options)
        try await harness.waitForFleet { ($0["verified"] ?? 0) >= 60 }
        try broker.restart(downFor: 1)
        let status = try await harness.waitForFleet(timeout: 90) { ($0["verified"] ?? 0) == 200 }
        #expect(status["devices"] as? Int == 200)
        for device in fleet.snapshot() {
            #expect(device.digest(tag: 42) == harness.newChain.sha256)
            #expect(Set(device.appliedSeqs).count == device.appliedSeqs.count)
        }
        #expect(fleet.stats.oversizeMessages == 0)
        await harness.stop()
    }

    @Test func floodOf1000MalformedMessages_midRotation_isCounted_andTheRotationCompletes() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        let fleet = try harness.startFleet(harness.fleetOptions(devices: 200))
        let attacker = try await HostileInputTests.Publisher(harness, id: "flood")
        try await harness.waitForFleet { ($0["verified"] ?? 0) >= 20 }
        let garbage: [(String, String)] = [
            ("dev-00007/certs/inventory", "{{{"),
            ("dev-00008/certs/inventory", #"{"v":1,"seq":0,"creds":[{"tag":1,"type":99,"sha256":"x"}]}"#),
            ("dev-00009/certs/ack", #"{"jti":"nope","status":"applied"}"#),
            ("dev-00010/certs/ack", "\u{0}\u{1}\u{2}"),
            ("certrot/rpc", #"{"jsonrpc":"2.0","id":1,"method":"fleet.status"}"#),
        ]
        for index in 0..<1000 {
            let (topic, payload) = garbage[index % garbage.count]
            try attacker.send(topic, payload)
        }
        let status = try await harness.waitForFleet(timeout: 90) { ($0["verified"] ?? 0) == 200 }
        var dropped = status["dropped"] as? [String: Int] ?? [:]
        // Queued inventories of one device collapse to the newest (inventory_superseded), and one requester's
        // requests beyond its rate are dropped (rpc_rate_limited): every message is still counted once.
        for _ in 0..<100 where dropped.values.reduce(0, +) < 1000 {
            try await Task.sleep(for: .milliseconds(100))
            dropped = (try await harness.rpc().result("fleet.status")["dropped"] as? [String: Int]) ?? [:]
        }
        #expect(dropped.values.reduce(0, +) == 1000)
        #expect(
            dropped["bad_json", default: 0] + dropped["invalid_inventory", default: 0]
                + dropped["inventory_superseded", default: 0] == 600)
        #expect(dropped["bad_json", default: 0] >= 200, "the acks' garbage, and at least one inventory")
        #expect(dropped["unknown_jti"] == 200)
        #expect(dropped["rpc_no_reply_topic", default: 0] + dropped["rpc_rate_limited", default: 0] == 200)
        #expect(fleet.stats.oversizeMessages == 0)
        attacker.client.stop()
        await harness.stop()
    }
}

import CertrotCore
import CertrotMQTT
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

@Suite(.serialized) struct HostileInputTests {
    /// Publishes with a plain MQTT 3.1.1 client and waits for the broker's PUBACKs.
    final class Publisher: @unchecked Sendable {
        let client: MQTTClient
        let events: AsyncStream<MQTTEvent>
        init(_ harness: Harness, id: String = "attacker") async throws {
            let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
            events = stream
            client = try MQTTClient(
                options: MQTTOptions(host: harness.broker.host, port: harness.broker.port, clientID: id),
                logger: harness.logger
            ) { input.yield($0) }
            try client.start()
            for await event in events { if case .connected = event { break } }
        }
        func send(_ topic: String, _ payload: String) throws {
            try client.publish(topic: topic, payload: Array(payload.utf8))
        }
        func send(_ topic: String, _ payload: [UInt8]) throws { try client.publish(topic: topic, payload: payload) }
    }

    @Test func malformedForgedAndReplayedInput_isDroppedAndCounted_andChangesNothing() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        let fleet = try harness.startFleet(harness.fleetOptions(devices: 5))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 5 }
        let rpc = try harness.rpc()
        let before = try await rpc.result("device.status", params: ["device": "dev-00001"])
        let jti = ((before["rotations"] as? [[String: Any]])?.first?["jti"] as? String) ?? ""
        #expect(!jti.isEmpty)

        let attacker = try await Publisher(harness)
        let digest = String(repeating: "a", count: 64)
        // One bad inventory per device topic: queued inventories of one device collapse to the newest.
        try attacker.send("dev-00001/certs/inventory", "{not json")
        try attacker.send("dev-00002/certs/inventory", #"{"v":1,"seq":"x","creds":[]}"#)
        try attacker.send(
            "dev-00004/certs/inventory", #"{"v":1,"seq":9,"creds":[{"tag":-5,"type":0,"sha256":"\#(digest)"}]}"#)
        try attacker.send("dev-00005/certs/inventory", Array(repeating: UInt8(ascii: " "), count: 10 * 1024 * 1024))
        try attacker.send(String(repeating: "x", count: 129) + "/certs/inventory", #"{"v":1,"seq":0,"creds":[]}"#)
        // An ack for dev-00001's bundle published on dev-00002's topic, an unknown jti, and 100 replays.
        try attacker.send("dev-00002/certs/ack", #"{"jti":"\#(jti)","status":"rejected"}"#)
        try attacker.send("dev-00001/certs/ack", #"{"jti":"ffffffffffffffffffffffffffffffff","status":"failed"}"#)
        for _ in 0..<100 { try attacker.send("dev-00001/certs/ack", #"{"jti":"\#(jti)","status":"applied"}"#) }
        try attacker.send("dev-00001/certs/ack", #"{"jti":"\#(jti)","status":"rejected"}"#)
        try attacker.send("dev-00001/certs/ack", "[]")
        try attacker.send("certrot/rpc", #"{"jsonrpc":"2.0","id":1,"method":"fleet.status"}"#)
        // 100,000 credentials (far over 64 KiB).
        let hugeCreds = (0..<100_000).map { #"{"tag":\#($0),"type":0,"sha256":"\#(digest)"}"# }.joined(separator: ",")
        try attacker.send("dev-00003/certs/inventory", #"{"v":1,"seq":0,"creds":[\#(hugeCreds)]}"#)

        var dropped: [String: Int] = [:]
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let status = try await rpc.result("fleet.status")
            dropped = status["dropped"] as? [String: Int] ?? [:]
            if dropped["duplicate_ack", default: 0] >= 101, dropped["rpc_no_reply_topic"] != nil,
                dropped["oversize", default: 0] >= 2
            {
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(dropped["bad_json"] == 1)
        #expect(dropped["invalid_inventory"] == 2)
        #expect(dropped["oversize"] == 2)
        #expect(dropped["invalid_device_id"] == 1)
        #expect(dropped["foreign_ack"] == 1)
        #expect(dropped["unknown_jti"] == 1)
        #expect(dropped["duplicate_ack"] == 101)
        #expect(dropped["invalid_ack"] == 1)
        #expect(dropped["rpc_no_reply_topic"] == 1)

        // Nothing stored changed: same rotation, same inventory, every device still verified.
        let after = try await rpc.result("device.status", params: ["device": "dev-00001"])
        #expect(NSDictionary(dictionary: after) == NSDictionary(dictionary: before))
        let fleetStatus = try await rpc.result("fleet.status")
        #expect((fleetStatus["states"] as? [String: Int])?["verified"] == 5)
        #expect(fleetStatus["devices"] as? Int == 5)
        _ = fleet
        attacker.client.stop()
        await harness.stop()
    }

    @Test func jsonRPC_errors_andMQTT311ReplyTo() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        _ = try harness.startFleet(harness.fleetOptions(devices: 2))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 2 }
        let rpc = try harness.rpc()

        func errorCode(_ method: String, _ params: [String: Any] = [:]) async throws -> Int? {
            let reply = try await rpc.call(method, params: params)
            return (reply["error"] as? [String: Any])?["code"] as? Int
        }
        #expect(try await errorCode("no.such.method") == -32601)
        #expect(try await errorCode("device.status") == -32602)
        #expect(try await errorCode("device.status", ["device": "a/b"]) == -32602)
        #expect(try await errorCode("device.status", ["device": "never-seen"]) == -32004)
        // Huge params: refused whole, the daemon keeps answering.
        #expect(try await errorCode("device.status", ["device": String(repeating: "x", count: 70_000)]) == -32600)
        #expect(try await errorCode("fleet.status") == nil)
        // A batch is an invalid request (JSON-RPC 2.0 §6: this daemon takes one request per message).
        let mqtt5 = try await Peer(harness, subscribe: ["certrot/replies/batch"], v5: true)
        try mqtt5.send(
            "certrot/rpc", #"[{"jsonrpc":"2.0","id":"b2","method":"fleet.status"}]"#,
            responseTopic: "certrot/replies/batch")
        let replies5 = try await mqtt5.wait { !$0.isEmpty }
        let batchError = replies5.first.flatMap {
            try? JSONSerialization.jsonObject(with: Data($0.payload)) as? [String: Any]
        }
        #expect((batchError?["error"] as? [String: Any])?["code"] as? Int == -32600)
        mqtt5.stop()

        // A 3.1.1 client has no Response Topic: it names one in reply_to.
        let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
        let client = try MQTTClient(
            options: MQTTOptions(host: harness.broker.host, port: harness.broker.port, clientID: "op311"),
            logger: harness.logger
        ) { input.yield($0) }
        try client.start()
        var replies: [[String: Any]] = []
        for await event in stream {
            switch event {
            case .connected: try client.subscribe(["certrot/replies/me"])
            case .subscribed:
                try client.publish(
                    topic: "certrot/rpc",
                    payload: Array(
                        #"{"jsonrpc":"2.0","id":7,"method":"fleet.status","reply_to":"certrot/replies/me"}"#.utf8))
                try client.publish(
                    topic: "certrot/rpc",
                    payload: Array(
                        #"{"jsonrpc":"1.0","id":8,"method":"fleet.status","reply_to":"certrot/replies/me"}"#.utf8))
                try client.publish(
                    topic: "certrot/rpc",
                    payload: Array(
                        #"{"jsonrpc":"2.0","id":9,"method":"fleet.status","params":[1],"reply_to":"certrot/replies/me"}"#
                            .utf8))
            case .message(let message):
                replies.append(try JSONSerialization.jsonObject(with: Data(message.payload)) as! [String: Any])
            default: break
            }
            if replies.count == 3 { break }
        }
        client.stop()
        let byID = Dictionary(uniqueKeysWithValues: replies.map { ($0["id"] as? Int ?? 0, $0) })
        #expect(((byID[7]?["result"] as? [String: Any])?["states"] as? [String: Int])?["verified"] == 2)
        #expect((byID[8]?["error"] as? [String: Any])?["code"] as? Int == -32600)
        #expect((byID[9]?["error"] as? [String: Any])?["code"] as? Int == -32602)
        await harness.stop()
    }
}

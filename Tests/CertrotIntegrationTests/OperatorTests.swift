import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

@Suite(.serialized) struct OperatorTests {
    func errorCode(_ reply: [String: Any]) -> Int? { (reply["error"] as? [String: Any])?["code"] as? Int }
    func errorMessage(_ reply: [String: Any]) -> String {
        ((reply["error"] as? [String: Any])?["message"] as? String) ?? ""
    }

    @Test func mutatingMethods_needASignedFreshUnreplayedRequest_whenOperatorsAreConfigured() async throws {
        let harness = try Harness()
        let operatorKey = SigningKey.generate()
        try operatorKey.publicKey.pem.write(toFile: harness.path("operator.pub"), atomically: true, encoding: .utf8)
        let config = try harness.writeConfig()
        try
            (try String(contentsOfFile: config, encoding: .utf8)
            + "\noperators: [{name: alice, publicKey: \(harness.path("operator.pub"))}]\n")
            .write(toFile: config, atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: config)
        var options = harness.fleetOptions(devices: 3)
        let rejecting = options.deviceID(1)
        options.behaviours[rejecting] = DeviceBehaviour(rejects: true)
        _ = try harness.startFleet(options)
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 2 && ($0["rejected"] ?? 0) == 1 }
        let rpc = try harness.rpc()
        let sign: @Sendable ([UInt8]) -> String = {
            try! JWS.sign(payload: $0, typ: "certrot-rpc+jwt", with: operatorKey)
        }

        // Read-only methods stay open; the mutating one refuses an unsigned request, or one signed by a stranger.
        #expect(errorCode(try await rpc.call("fleet.status")) == nil)
        let unsigned = try await rpc.call("device.retry", params: ["device": rejecting])
        #expect(errorCode(unsigned) == -32010)
        #expect(errorMessage(unsigned).contains("signed"))
        let stranger = SigningKey.generate()
        let forged = try await rpc.call("device.retry", params: ["device": rejecting]) {
            try! JWS.sign(payload: $0, typ: "certrot-rpc+jwt", with: stranger)
        }
        #expect(errorCode(forged) == -32010)
        // Campaigns too: creating, pausing, resuming and aborting need a signature; listing does not.
        let campaign: [String: Any] = [
            "name": "unsigned", "targets": [["tag": 42, "credential": "new-ca"]],
            "select": ["devices": [options.deviceID(2)]],
        ]
        #expect(errorCode(try await rpc.call("campaign.create", params: campaign)) == -32010)
        #expect(errorCode(try await rpc.call("campaign.abort", params: ["id": "cmp-x"])) == -32010)
        #expect(errorCode(try await rpc.call("campaign.list")) == nil)
        let signedCreate = try await rpc.call("campaign.create", params: campaign, timeout: 30, sign: sign)
        #expect(errorCode(signedCreate) == nil, "\(signedCreate)")

        // A stale iat, and a replayed jti, are refused.
        let staleRequest =
            #"{"jsonrpc":"2.0","id":"s1","method":"device.retry","params":{"device":"\#(rejecting)"},"iat":1000,"jti":"old-1","reply_to":"certrot/replies/op"}"#
        let replayable =
            #"{"jsonrpc":"2.0","id":"r1","method":"device.retry","params":{"device":"\#(rejecting)"},"iat":\#(Int(Date().timeIntervalSince1970)),"jti":"once-1","reply_to":"certrot/replies/op"}"#
        let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
        let raw = try MQTTClient(
            options: MQTTOptions(host: harness.broker.host, port: harness.broker.port, clientID: "op-raw"),
            logger: harness.logger
        ) { input.yield($0) }
        try raw.start()
        var replies: [[String: Any]] = []
        for await event in stream {
            switch event {
            case .connected: try raw.subscribe(["certrot/replies/op"])
            case .subscribed:
                for text in [staleRequest, replayable, replayable] {
                    try raw.publish(
                        topic: "certrot/rpc",
                        payload: Array(
                            try JWS.sign(payload: Array(text.utf8), typ: "certrot-rpc+jwt", with: operatorKey).utf8))
                }
            case .message(let message):
                replies.append(try JSONSerialization.jsonObject(with: Data(message.payload)) as! [String: Any])
            default: break
            }
            if replies.count == 3 { break }
        }
        raw.stop()
        #expect(errorCode(replies[0]) == -32010 && errorMessage(replies[0]).contains("iat"))
        #expect(errorCode(replies[1]) == nil)
        #expect(errorCode(replies[2]) == -32010 && errorMessage(replies[2]).contains("replay"))

        // The signed retry started the rejected rotation over: it was sent again (and rejected again).
        let retried = try await rpc.result("device.retry", params: ["device": rejecting], sign: sign)
        #expect(retried["retried"] as? [String] == ["broker-ca"] || retried["retried"] as? [String] == [])
        let rejections =
            try await harness.eventually({
                let status = try await rpc.result("device.status", params: ["device": rejecting])
                return ((status["history"] as? [[String: Any]]) ?? []).filter { $0["state"] as? String == "rejected" }
                    .count
            }) { $0 >= 2 } ?? 0
        #expect(rejections >= 2)
        let history =
            try await rpc.result("device.status", params: ["device": rejecting])["history"] as? [[String: Any]] ?? []
        #expect(history.contains { ($0["detail"] as? String) == "retried by an operator" })
        // The audit log names who asked: the operator's name in the config and the kid of the key.
        let byAlice = try harness.storeScalar(
            "SELECT COUNT(*) FROM audit WHERE kind = 'operator.request' AND subject = 'device.retry' "
                + "AND body LIKE '%\"operator\":\"alice\"%' AND body LIKE '%\"kid\":\"\(operatorKey.kid)\"%'")
        #expect(byAlice ?? 0 >= 2, "the signed retries, with the name and the kid")
        let created = try harness.storeScalar(
            "SELECT COUNT(*) FROM audit WHERE kind = 'operator.request' AND subject = 'campaign.create' "
                + "AND body LIKE '%\"operator\":\"alice\"%'")
        #expect(created == 1)
        let refused = try harness.storeScalar(
            "SELECT COUNT(*) FROM audit WHERE kind = 'operator.request' AND body LIKE '%\"operator\":\"unsigned\"%'")
        #expect(refused == 0, "requests refused for want of a signature are not recorded")
        await harness.stop()
    }
}

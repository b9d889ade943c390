import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotStore
import CertrotTestSupport
import Foundation
import Testing

/// Requests from anyone allowed to publish on certrot/rpc: where replies may go, what a read may cost, how fast
/// one may ask (docs/security.md, "Hostile devices and requesters").
@Suite(.serialized) struct HostileRequesterTests {
    func errorCode(_ reply: [String: Any]?) -> Int? { (reply?["error"] as? [String: Any])?["code"] as? Int }

    @Test func replies_goOnlyUnderTheReplyPrefix_neverIntoADevicesBundleTopic() async throws {
        let harness = try Harness()
        try harness.startDaemon()
        _ = try harness.startFleet(harness.fleetOptions(devices: 2))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 2 }
        let device = harness.fleetOptions(devices: 2).deviceID(1)
        let watcher = try await Peer(harness, subscribe: [Topics.bundle(device), "operators/#", "certrot/campaigns/#"])
        let attacker = try await Peer(harness, v5: true)
        let list = #"{"jsonrpc":"2.0","id":1,"method":"device.list","params":{"limit":1000}"#
        // reply_to (MQTT 3.1.1) and Response Topic (MQTT 5) naming a device's bundle topic, a topic outside the
        // prefix, and a campaign's status topic.
        try attacker.send(Topics.rpc, list + #","reply_to":"\#(Topics.bundle(device))"}"#)
        try attacker.send(Topics.rpc, list + "}", responseTopic: Topics.bundle(device))
        try attacker.send(Topics.rpc, list + #","reply_to":"operators/me"}"#)
        try attacker.send(Topics.rpc, list + #","reply_to":"certrot/campaigns/x/status"}"#)
        // A request answered on the same path after them: once it is answered, they have been handled.
        let raw = try await RawRPC(harness)
        let reply = try await raw.call(
            id: "after",
            payload:
                #"{"jsonrpc":"2.0","id":"after","method":"device.list","params":{},"reply_to":"\#(raw.replyTopic)"}"#)
        #expect((reply?["result"] as? [String: Any])?["devices"] != nil)
        #expect(watcher.messages().isEmpty, "\(watcher.messages().map(\.topic))")
        let dropped = try await harness.rpc().result("fleet.status")["dropped"] as? [String: Int]
        #expect(dropped?["rpc_no_reply_topic"] == 4)
        watcher.stop()
        attacker.stop()
        raw.stop()
        await harness.stop()
    }

    @Test func deviceList_isAnsweredBesideTheEngine_withABoundedCostPerCall() async throws {
        let harness = try Harness()
        // 5,000 devices known, filled into the store before the daemon opens it.
        do {
            let store = try SQLiteStore(path: harness.path("certrot.db"))
            let digest = try PEM.normalizeChain(harness.newCA.pem).sha256
            try store.write { tx in
                for index in 0..<5000 {
                    let inventory = Inventory(seq: 1, creds: [.init(tag: 42, type: 0, sha256: digest)])
                    try tx.saveDevice(
                        DeviceRecord(
                            id: String(format: "known-%05d", index), firstSeen: 1, lastSeen: 1, inventory: inventory,
                            issuedSeq: 1))
                }
            }
            store.close()
        }
        try harness.startDaemon()
        let rpc = try harness.rpc()
        _ = try await harness.waitForFleet { _ in true }
        // A filter that matches nothing: each call looks at no more than its scan budget, and says where to go on.
        let nobody = String(repeating: "0", count: 64)
        var pages = 0
        var after: String?
        repeat {
            var params: [String: Any] = ["holding": nobody, "limit": 1000]
            params["after"] = after
            let page = try await rpc.result("device.list", params: params)
            #expect((page["devices"] as? [Any])?.isEmpty == true)
            after = page["next"] as? String
            pages += 1
        } while after != nil && pages < 100
        // 5,000 devices at a scan budget of 2,000 a call (or fewer, where the 100 ms time budget ends it first).
        #expect(pages >= 3 && after == nil, "\(pages) pages")

        // 60 such calls sent at once, then a device's first inventory: its bundle does not wait behind them. The
        // device is connected first, so that the window is the reads' time alone, not a connection's set-up.
        let raw = try await RawRPC(harness)
        let device = try await Peer(harness, subscribe: [Topics.bundle("late-1")])
        let oldDigest = try PEM.normalizeChain(harness.oldCA.pem).sha256
        for index in 0..<60 {
            try raw.peer.send(
                Topics.rpc,
                #"{"jsonrpc":"2.0","id":"flood-\#(index)","method":"device.list","params":{"holding":"\#(nobody)","limit":1000},"reply_to":"\#(raw.replyTopic)"}"#
            )
        }
        try device.send(
            Topics.inventory("late-1"), #"{"v":1,"seq":0,"creds":[{"tag":42,"type":0,"sha256":"\#(oldDigest)"}]}"#)
        try await device.wait { !$0.isEmpty }
        #expect(!device.messages().isEmpty, "the device got its bundle")
        let answeredBefore = raw.peer.messages(on: raw.replyTopic).count
        #expect(answeredBefore < 60, "the bundle went out while the reads were still being answered")
        try await raw.peer.wait(timeout: 60) { $0.count >= 60 }
        #expect(raw.peer.messages(on: raw.replyTopic).count == 60)
        device.stop()
        raw.stop()
        await harness.stop()
    }

    @Test func oneRequester_isRateLimited_andOthersAreStillAnswered() async throws {
        let harness = try Harness()
        let config = try harness.writeConfig(extra: "rpc: {rate: 5, burst: 10, totalRate: 1000}")
        try harness.startDaemon(configPath: config)
        let rpc = try harness.rpc()
        _ = try await harness.waitForFleet { _ in true }
        let flooder = try await RawRPC(harness)
        for index in 0..<200 {
            try flooder.peer.send(
                Topics.rpc,
                #"{"jsonrpc":"2.0","id":"f\#(index)","method":"fleet.status","reply_to":"\#(flooder.replyTopic)"}"#)
        }
        // Another requester is answered meanwhile.
        let other = try await RawRPC(harness)
        let reply = try await other.call(
            id: "o", payload: #"{"jsonrpc":"2.0","id":"o","method":"fleet.status","reply_to":"\#(other.replyTopic)"}"#)
        #expect(reply?["result"] != nil)
        let limited =
            try await harness.eventually({
                (try await rpc.result("fleet.status")["dropped"] as? [String: Int])?["rpc_rate_limited"] ?? 0
            }) { $0 >= 150 } ?? 0
        #expect(limited >= 150, "at most the burst and a few seconds' rate of 200 requests get through")
        #expect(flooder.peer.messages(on: flooder.replyTopic).count <= 50)
        flooder.stop()
        other.stop()
        await harness.stop()
    }

    @Test func signedReads_makeEveryMethodNeedAnOperatorsSignature() async throws {
        let harness = try Harness()
        let operatorKey = SigningKey.generate()
        try operatorKey.publicKey.pem.write(toFile: harness.path("operator.pub"), atomically: true, encoding: .utf8)
        let config = try harness.writeConfig(
            extra: """
                operators: [{name: alice, publicKey: \(harness.path("operator.pub"))}]
                rpc: {signedReads: true}
                """)
        try harness.startDaemon(configPath: config)
        let rpc = try harness.rpc()
        let sign: @Sendable ([UInt8]) -> String = {
            try! JWS.sign(payload: $0, typ: "certrot-rpc+jwt", with: operatorKey)
        }
        var signed: [String: Any] = [:]
        for _ in 0..<50 {
            signed = (try? await rpc.call("fleet.status", timeout: 1, sign: sign)) ?? [:]
            if !signed.isEmpty { break }
        }
        #expect(signed["result"] != nil)
        for method in ["fleet.status", "device.status", "device.list", "campaign.list"] {
            #expect(
                errorCode(try await rpc.call(method, params: method == "device.status" ? ["device": "x"] : [:]))
                    == -32010)
        }
        await harness.stop()
    }

    @Test func config_refusesSignedReadsWithoutOperators_andAReplyPrefixTheDaemonOwns() async throws {
        let harness = try Harness()
        for extra in [
            "rpc: {signedReads: true}", "rpc: {replyPrefix: certrot/}", "rpc: {replyPrefix: \"#/\"}", "rpc: {rate: 0}",
        ] {
            let config = try CertrotConfig.load(path: try harness.writeConfig(extra: extra))
            #expect(!DaemonSettings.problems(config).isEmpty, "\(extra)")
        }
        await harness.stop()
    }
}

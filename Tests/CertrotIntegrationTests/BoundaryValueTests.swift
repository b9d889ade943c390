import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import GRDB
import Testing

/// Every integer field of every inbound message, with the values an attacker would try, through the real broker
/// (retained where the topic is retained), then a restart: the daemon must stay up, keep serving, and the store
/// must be as it was. One retained `seq` of 2^63 − 1 used to kill the daemon on every start.
@Suite(.serialized) struct BoundaryValueTests {
    /// JSON texts of the values tried in every integer field.
    static let values = [
        "0", "-1", "2147483648", "9007199254740992", "9223372036854775807", "-9223372036854775808", "1e300", "1.5",
        "\"1\"",
    ]
    static let digest = String(repeating: "a", count: 64)

    /// An inventory with `field` set to `value` and every other field valid.
    static func inventory(_ field: String, _ value: String) -> String {
        var top = ["\"v\":1", "\"seq\":0"]
        var cred = ["\"tag\":42", "\"type\":0", "\"sha256\":\"\(digest)\""]
        switch field {
        case "v": top[0] = "\"v\":\(value)"
        case "seq": top[1] = "\"seq\":\(value)"
        case "maxMessage": top.append("\"maxMessage\":\(value)")
        case "tag": cred[0] = "\"tag\":\(value)"
        case "type": cred[1] = "\"type\":\(value)"
        case "notAfter": cred.append("\"notAfter\":\(value)")
        default: Issue.record("unknown field \(field)")
        }
        return "{\(top.joined(separator: ",")),\"creds\":[{\(cred.joined(separator: ","))}]}"
    }

    /// Whether docs/protocol.md allows `value` in `field` (then the inventory is accepted).
    static func allowed(_ field: String, _ value: String) -> Bool {
        guard let number = Int64(value) else { return false }
        switch field {
        case "v": return number == 1
        case "seq": return (0...Bounds.maxSeq).contains(number)
        case "maxMessage": return (256...268_435_455).contains(number)
        case "tag": return (0...Inventory.maxTag).contains(number)
        case "type": return (0...6).contains(number)
        case "notAfter": return Bounds.times.contains(number)
        default: return false
        }
    }

    /// What the store holds, without what a re-delivered retained inventory legitimately refreshes (`last_seen`),
    /// the operator requests' replay table, and devices whose name starts with `edge-` (accepted on purpose).
    static func dump(_ harness: Harness) throws -> [String] {
        let queue = try DatabaseQueue(path: harness.path("certrot.db"))
        defer { try? queue.close() }
        let queries = [
            "SELECT id, first_seen, hex(inventory), issued_seq FROM devices WHERE id NOT LIKE 'edge-%' ORDER BY id",
            "SELECT * FROM rotations WHERE device NOT LIKE 'edge-%' ORDER BY device, target",
            "SELECT jti, device, seq, iat, exp, jws FROM bundles WHERE device NOT LIKE 'edge-%' ORDER BY jti",
            "SELECT * FROM history WHERE device NOT LIKE 'edge-%' ORDER BY id",
            "SELECT * FROM expiry WHERE device NOT LIKE 'edge-%' ORDER BY device, target",
            "SELECT * FROM campaigns ORDER BY id",
        ]
        return try queue.read { db in
            try queries.flatMap { sql in try Row.fetchAll(db, sql: sql).map { "\(sql.prefix(24)) \($0)" } }
        }
    }

    @Test func boundaryIntegers_inEveryInboundMessage_areRefused_theDaemonSurvivesARestart_andTheStoreIsUnchanged()
        async throws
    {
        let harness = try Harness()
        let operatorKey = SigningKey.generate()
        try operatorKey.publicKey.pem.write(toFile: harness.path("operator.pub"), atomically: true, encoding: .utf8)
        // The target is inside its renewBefore window with no successor: the expiry arithmetic runs for every device.
        let config = try harness.writeConfig(
            ackTimeout: "10m",
            targets:
                "\n  - {name: broker-ca, tag: 42, type: 0, chain: \(harness.path("new-ca.pem")), renewBefore: 800d}",
            extra: """
                operators: [{name: alice, publicKey: \(harness.path("operator.pub"))}]
                rpc: {rate: 10000, burst: 10000, totalRate: 10000}
                """)
        try harness.startDaemon(configPath: config)
        _ = try harness.startFleet(harness.fleetOptions(devices: 3))
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 3 }
        let rpc = try harness.rpc()

        // A device with a bundle out (never acked), for acks with boundary values.
        let attacker = try await Peer(harness)
        let oldDigest = try PEM.normalizeChain(harness.oldCA.pem).sha256
        try attacker.send(
            Topics.inventory("evil-1"), #"{"v":1,"seq":0,"creds":[{"tag":42,"type":0,"sha256":"\#(oldDigest)"}]}"#,
            retain: true)
        let jti = try await harness.sentBundle(of: "evil-1") ?? ""
        #expect(!jti.isEmpty)
        let before = try Self.dump(harness)

        // Inventories, retained, each on a topic of its own (a retained message is re-delivered per topic).
        var refusedInventories = 0
        var accepted: [String] = []
        for field in ["v", "seq", "maxMessage", "tag", "type", "notAfter"] {
            for (index, value) in (Self.values + (field == "seq" ? ["9007199254740991"] : [])).enumerated() {
                let ok = Self.allowed(field, value)
                let device = "\(ok ? "edge" : "bad")-\(field)-\(index)"
                try attacker.send(Topics.inventory(device), Self.inventory(field, value), retain: true)
                if ok { accepted.append(device) } else { refusedInventories += 1 }
            }
        }
        // Acks for evil-1's real bundle: every value out of range.
        var refusedAcks = 0
        for value in Self.values where value != "0" && value != "-1" {
            try attacker.send(Topics.ack("evil-1"), #"{"jti":"\#(jti)","status":"failed","code":\#(value)}"#)
            refusedAcks += 1
        }
        for value in Self.values {
            try attacker.send(Topics.ack("evil-1"), #"{"jti":"\#(jti)","status":"incomplete","missing":[\#(value)]}"#)
            refusedAcks += 1
        }

        // JSON-RPC params and signed-request claims: every call is answered, none changes anything.
        let raw = try await RawRPC(harness)
        var answered = 0
        var calls = 0
        func ask(_ method: String, _ params: String, signed: Bool = false, iat: String? = nil) async throws {
            calls += 1
            let id = "b\(calls)"
            var request =
                #"{"jsonrpc":"2.0","id":"\#(id)","method":"\#(method)","params":\#(params),"reply_to":"\#(raw.replyTopic)""#
            if signed {
                request +=
                    #","iat":\#(iat ?? String(Int64(Date().timeIntervalSince1970))),"jti":"\#(id)-\#(UUID().uuidString)""#
            }
            request += "}"
            let payload =
                signed ? try JWS.sign(payload: Array(request.utf8), typ: "certrot-rpc+jwt", with: operatorKey) : request
            if let reply = try await raw.call(id: id, payload: payload) {
                answered += 1
                #expect(reply["result"] != nil || reply["error"] != nil)
            } else {
                Issue.record("no reply to \(method) \(params)")
            }
        }
        for value in Self.values {
            for key in ["limit", "expiringBefore", "tag"] {
                try await ask("device.list", #"{"\#(key)":\#(value)\#(key == "tag" ? #","expiringBefore":1"# : "")}"#)
            }
            try await ask("device.status", #"{"device":\#(value)}"#)
            for key in [
                "rate", "ackTimeout", "retryAttempts", "retryBase", "start", "deadline", "minExecuted",
                "minRemainingValidity", "successThreshold",
            ] {
                // A selection that matches nobody: a request that passes its checks is refused as empty.
                let campaign =
                    #"{"name":"b-\#(key)","targets":[{"tag":42,"credential":"new-ca"}],"select":{"devices":["nobody"]},"\#(key)":\#(value)}"#
                try await ask("campaign.create", campaign, signed: true)
            }
            try await ask(
                "campaign.create",
                #"{"name":"w","targets":[{"tag":42,"credential":"new-ca"}],"select":{"devices":["nobody"]},"waves":[\#(value)]}"#,
                signed: true)
            try await ask(
                "campaign.create",
                #"{"name":"t","targets":[{"tag":\#(value),"credential":"new-ca"}],"select":{"devices":["nobody"]}}"#,
                signed: true)
            try await ask(
                "campaign.create",
                #"{"name":"s","targets":[{"tag":42,"credential":"new-ca"}],"select":{"tag":43,"expiringWithin":\#(value)}}"#,
                signed: true)
            try await ask("device.retry", #"{"device":"dev-00001"}"#, signed: true, iat: value)
            try await ask("campaign.pause", #"{"id":\#(value)}"#, signed: true)
        }
        #expect(answered == calls)

        // Everything refused is counted; then a restart re-delivers the retained inventories.
        func dropped() async throws -> [String: Int] {
            (try await rpc.result("fleet.status")["dropped"] as? [String: Int]) ?? [:]
        }
        var counts =
            try await harness.eventually(dropped) {
                $0["invalid_inventory", default: 0] >= refusedInventories
                    && $0["invalid_ack", default: 0] >= refusedAcks
            } ?? [:]
        #expect(counts["invalid_inventory", default: 0] == refusedInventories)
        #expect(counts["invalid_ack", default: 0] == refusedAcks)
        await harness.stopDaemon()
        try harness.startDaemon(configPath: config)
        counts =
            try await harness.eventually(dropped) { $0["invalid_inventory", default: 0] >= refusedInventories } ?? [:]
        #expect(counts["invalid_inventory", default: 0] == refusedInventories)
        let fleet = try await rpc.result("fleet.status")
        #expect(fleet["devices"] as? Int == 4 + accepted.count)
        // The device that reported the largest seq can be sent nothing later, and says so.
        let exhausted = try await rpc.result("device.status", params: ["device": "edge-seq-9"])
        let state = ((exhausted["rotations"] as? [[String: Any]])?.first?["state"]) as? String
        #expect(state == "failed")
        #expect(try Self.dump(harness) == before)

        // Still serving: a new device is rotated.
        var late = harness.fleetOptions(devices: 1)
        late.idPrefix = "late-"
        _ = try harness.startFleet(late)
        try await harness.waitForFleet { ($0["verified"] ?? 0) == 4 }
        raw.stop()
        attacker.stop()
        await harness.stop()
    }
}

import CertrotCore
import CertrotMQTT
import CertrotStore
import CertrotTestSupport
import Foundation
import GRDB
import Synchronization
import Testing

@testable import CertrotServer

/// A fuzzer for the engine itself, not only its parsers: structured hostile messages (inventories, acks, JSON-RPC
/// requests with boundary values and byte-level mutations, lookalike device IDs), PUBACKs from a real broker,
/// restarts of the connection and a clock that jumps, fed as batches to the engine the daemon wires, on a real
/// SQLite store. It runs for a bounded time (`CERTROT_ENGINE_FUZZ_SECONDS`; `make test` runs it alone after the
/// other tests, for 15 s, so that its load does not slow them; without the variable it is skipped; seed from
/// `CERTROT_ENGINE_FUZZ_SEED`, printed) and checks after every few batches what must always hold: every rotation's
/// outstanding bundle is stored for that same device, no seq is above the device's issued seq or the protocol's
/// bound, and nothing trapped.
@Suite(
    .serialized,
    .enabled(
        if: ProcessInfo.processInfo.environment["CERTROT_ENGINE_FUZZ_SECONDS"] != nil, "set CERTROT_ENGINE_FUZZ_SECONDS"
    )
)
struct EngineFuzzTests {
    final class Events: Sendable {
        let queue = Mutex<[MQTTEvent]>([])
        func take() -> [MQTTEvent] {
            queue.withLock { q in
                defer { q = [] }
                return q
            }
        }
    }

    final class Clock: Sendable {
        let now = Mutex<Int64>(Int64(Date().timeIntervalSince1970))
        func advance(_ seconds: Int64) { now.withLock { $0 = $0.saturatingAdd(seconds) } }
        var value: Int64 { now.withLock { $0 } }
    }

    struct Generator {
        var random: SplitMix64
        let devices = [
            "fz-1", "fz-2", "cafe\u{301}", "caf\u{e9}", "fz-\u{0}", "a/b", String(repeating: "x", count: 128),
        ]
        let numbers = [
            "0", "1", "2", "-1", "42", "43", "255", "256", "2048", "2147483647", "2147483648", "253402300799",
            "9007199254740991", "9007199254740992", "9223372036854775807", "-9223372036854775808", "1e300", "1.5",
            "\"1\"", "null", "true", "[]", "{}",
        ]
        var digests: [String]
        var kids: [String]
        var jtis: [String] = []
        var campaigns: [String] = []
        /// Real AT%KEYGEN outputs of the fuzzed devices' modems (for either identity tag), mutated or not.
        var keygens: [String: [(tag: Int64, output: String)]] = [:]

        mutating func pick<T>(_ list: [T]) -> T { list[Int(random.next() % UInt64(list.count))] }
        mutating func chance(_ p: Double) -> Bool { Double(random.next() % 1000) < p * 1000 }
        mutating func number() -> String { chance(0.5) ? pick(numbers) : String(Int(random.next() % 100)) }

        mutating func inventory() -> String {
            var fields = [
                #""v":\#(chance(0.9) ? "1" : number())"#,
                #""seq":\#(chance(0.7) ? String(random.next() % 8) : number())"#,
            ]
            if chance(0.2) { fields.append(#""maxMessage":\#(chance(0.5) ? "2048" : number())"#) }
            var creds: [String] = []
            for _ in 0..<Int(random.next() % 4) {
                var cred = [
                    #""tag":\#(chance(0.8) ? pick(["42", "43", "16842753", "16842754"]) : number())"#,
                    #""type":\#(chance(0.7) ? "0" : chance(0.8) ? "1" : number())"#,
                    #""sha256":"\#(chance(0.9) ? pick(digests) : String(repeating: "z", count: 64))""#,
                ]
                if chance(0.3) { cred.append(#""notAfter":\#(number())"#) }
                creds.append("{\(cred.joined(separator: ","))}")
            }
            fields.append(#""creds":[\#(creds.joined(separator: ","))]"#)
            if chance(0.5) { fields.append(#""active":\#(chance(0.8) ? pick(["16842753", "16842754"]) : number())"#) }
            if chance(0.4) {
                fields.append(
                    #""keys":[\#((0..<Int(random.next() % 3)).map { _ in "\"\(pick(kids))\"" }.joined(separator: ","))]"#
                )
            }
            return "{\(fields.joined(separator: ","))}"
        }

        mutating func ack() -> String {
            let jti = jtis.isEmpty || chance(0.1) ? "ffffffffffffffffffffffffffffffff" : pick(jtis)
            var fields = [
                #""jti":"\#(jti)""#, #""status":"\#(pick(["applied", "rejected", "failed", "incomplete", "bogus"]))""#,
            ]
            if chance(0.3) { fields.append(#""code":\#(number())"#) }
            if chance(0.4) { fields.append(#""missing":[\#(number()),\#(String(random.next() % 3 + 1))]"#) }
            if chance(0.2) { fields.append(#""reason":"fuzz""#) }
            return "{\(fields.joined(separator: ","))}"
        }

        mutating func request(device: String) -> String {
            let method = pick([
                "device.status", "fleet.status", "device.list", "device.retry", "campaign.create", "campaign.list",
                "campaign.status", "campaign.pause", "campaign.resume", "campaign.abort", "nope",
            ])
            let campaign = campaigns.isEmpty || chance(0.2) ? "cmp-x" : pick(campaigns)
            let params: String
            switch method {
            case "device.status", "device.retry": params = #"{"device":"\#(device)"}"#
            case "device.list":
                params = #"{"\#(pick(["limit", "expiringBefore", "state", "after", "holding"]))":\#(number())}"#
            case "campaign.create":
                let select = pick([
                    #"{"all":true}"#, #"{"devices":["\#(device)"]}"#, #"{"prefix":"fz"}"#,
                    #"{"tag":42,"expiringWithin":\#(number())}"#,
                ])
                params =
                    #"{"name":"c\#(random.next() % 4)","targets":[{"tag":\#(chance(0.8) ? "42" : number()),"credential":"\#(pick(["new-ca", "old-ca", "nope"]))","strategy":"\#(pick(["replace", "overlap"]))"}],"select":\#(select),"waves":[\#(pick(["\"50%\"", "1", number()]))],"\#(pick(["rate", "ackTimeout", "retryAttempts", "retryBase", "minExecuted", "errorThreshold"]))":\#(number()),"continuous":\#(pick(["true", "false"]))}"#
            default: params = #"{"id":"\#(campaign)"}"#
            }
            return
                #"{"jsonrpc":"2.0","id":"\#(random.next() % 1000)","method":"\#(method)","params":\#(params),"reply_to":"certrot/replies/fuzz"}"#
        }

        /// A CSR message (docs/protocol.md §11): for a known jti or not, a tag, a real or a broken KEYGEN output.
        mutating func csr(device: String) -> String {
            let jti = jtis.isEmpty || chance(0.1) ? "ffffffffffffffffffffffffffffffff" : pick(jtis)
            // Mostly the device's own modem's output, for the tag it was made in: what reaches issuance.
            let own = keygens[device] ?? keygens.values.first ?? [(0, "x")]
            let (madeIn, output) = pick(own)
            let tag = chance(0.8) ? String(madeIn) : number()
            var keygen = chance(0.9) ? output : pick(keygens.values.flatMap { $0 }.map(\.output))
            if chance(0.3) { keygen = String(decoding: mutate(keygen), as: UTF8.self) }
            if chance(0.1) { keygen = pick(["", ".", "..", "AAAA.AAAA", String(repeating: "A", count: 5000)]) }
            let escaped = keygen.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
                of: "\"", with: "\\\"")
            return #"{"v":\#(chance(0.9) ? "1" : number()),"jti":"\#(jti)","tag":\#(tag),"keygen":"\#(escaped)"}"#
        }

        /// A few bytes flipped, dropped or repeated.
        mutating func mutate(_ text: String) -> [UInt8] {
            var bytes = Array(text.utf8)
            for _ in 0..<Int(random.next() % 4) where !bytes.isEmpty {
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 3 {
                case 0: bytes[at] = UInt8(truncatingIfNeeded: random.next())
                case 1: bytes.remove(at: at)
                default: bytes.insert(bytes[at], at: at)
                }
            }
            return bytes
        }

        mutating func message() -> MQTTMessage {
            let device = pick(devices)
            let (topic, text): (String, String) =
                switch random.next() % 10 {
                case 0...4: (Topics.inventory(device), inventory())
                case 5...7: (Topics.ack(device), ack())
                case 8: (Topics.rpc, request(device: pick(devices)))
                case 9 where chance(0.6): (Topics.csr(device), csr(device: device))
                default: (pick([Topics.bundle(device), "\(device)/certs/other", "x"]), inventory())
                }
            return MQTTMessage(
                topic: topic, payload: chance(0.2) ? mutate(text) : Array(text.utf8), retained: chance(0.3))
        }
    }

    @Test func theEngine_survivesHostileBatches_andKeepsItsInvariants() async throws {
        let seconds = Double(ProcessInfo.processInfo.environment["CERTROT_ENGINE_FUZZ_SECONDS"] ?? "") ?? 15
        let seed =
            UInt64(ProcessInfo.processInfo.environment["CERTROT_ENGINE_FUZZ_SEED"] ?? "")
            ?? UInt64.random(in: 1...UInt64.max)
        print("engine fuzz: seed \(seed), \(seconds) s (CERTROT_ENGINE_FUZZ_SEED, CERTROT_ENGINE_FUZZ_SECONDS)")
        let harness = try Harness()
        let lab = try ClientIdentityLab(
            dir: harness.dir.appendingPathComponent("identities"), devices: ["fz-1", "fz-2"])
        let next = SigningKey.generate()
        try KeyFile.write(next, to: harness.path("next-key.pem"))
        let config = try harness.writeConfig(
            ackTimeout: "20s", retryBase: "2s",
            targets:
                "\n  - {name: broker-ca, tag: 42, type: 0, chain: \(harness.path("new-ca.pem")), renewBefore: 800d}",
            extra: """
                keyRotation: {nextKey: \(harness.path("next-key.pem"))}
                retention: {history: 10, bundles: 2}
                """ + "\n" + lab.yaml(caChain: "broker-ca", attestation: "optional"))
        var settings = try DaemonSettings.resolve(try CertrotConfig.load(path: config))
        settings.declaredCampaignDelay = 0
        let clock = Clock()
        let daemon = CertrotDaemon(settings: settings, logger: harness.logger, clock: { clock.value })
        let store = try openStore(url: harness.storeURL)
        defer { store.close() }
        let engine = daemon.makeEngine(store: store)
        try engine.startCampaigns()
        let events = Events()
        var options = settings.broker
        options.clientID = "fuzz-engine"
        let client = try MQTTClient(options: options, logger: harness.logger) { event in
            events.queue.withLock { $0.append(event) }
        }
        engine.client = client
        try client.start()
        defer { client.stop() }

        var generator = Generator(
            random: SplitMix64(seed: seed),
            digests: [harness.newChain.sha256, try PEM.normalizeChain(harness.oldCA.pem).sha256],
            kids: [settings.signer.kid, next.kid, "bad kid"])
        for (device, var modem) in lab.modems {
            for tag in ClientIdentityLab.tags {
                for _ in 0..<2 {
                    generator.keygens[device, default: []].append((tag, try modem.keygen(tag: tag)))
                    try modem.deleteKey(tag: tag)
                }
            }
        }
        let queue = try DatabaseQueue(path: harness.path("certrot.db"))
        defer { try? queue.close() }
        let started = Date()
        var batches = 0
        var inputs = 0
        while Date().timeIntervalSince(started) < seconds {
            var batch: [EngineInput] = events.take().map { .mqtt($0) }
            for _ in 0..<Int(generator.random.next() % 20 + 1) {
                switch generator.random.next() % 20 {
                case 0:
                    clock.advance(generator.pick([1, 2, 5, 30, 600, 86400, -5]))
                    batch.append(.tick)
                case 1: batch.append(.tick)
                case 2 where generator.chance(0.1): batch.append(.mqtt(.disconnected(code: 7)))
                case 3 where generator.chance(0.1):
                    batch.append(.mqtt(.connected(sessionPresent: generator.chance(0.5))))
                case 4:
                    batch.append(
                        .mqtt(
                            .published(
                                mid: Int32(truncatingIfNeeded: generator.random.next() % 2000),
                                reasonCode: generator.pick([0, 0x87]))))
                default: batch.append(.mqtt(.message(generator.message())))
                }
            }
            inputs += batch.count
            await engine.handle(batch)
            batches += 1
            if batches % 20 == 0 {
                let (jtis, campaigns, problems) = try await queue.read { db -> ([String], [String], [String]) in
                    var problems: [String] = []
                    let orphans =
                        try Int.fetchOne(
                            db,
                            sql: """
                                SELECT COUNT(*) FROM rotations r WHERE r.jti IS NOT NULL AND r.state NOT IN ('verified', 'cancelled')
                                    AND NOT EXISTS (SELECT 1 FROM bundles b WHERE b.jti = r.jti AND CAST(b.device AS BLOB) = CAST(r.device AS BLOB))
                                """) ?? 0
                    if orphans > 0 {
                        problems.append("\(orphans) rotations refer to a bundle that is not stored for their device")
                    }
                    let aboveIssued =
                        try Int.fetchOne(
                            db,
                            sql:
                                "SELECT COUNT(*) FROM bundles b JOIN devices d ON CAST(d.id AS BLOB) = CAST(b.device AS BLOB) WHERE b.seq > d.issued_seq"
                        ) ?? 0
                    if aboveIssued > 0 { problems.append("\(aboveIssued) bundles above their device's issued seq") }
                    let overBound =
                        try Int.fetchOne(
                            db, sql: "SELECT COUNT(*) FROM devices WHERE issued_seq > ? OR issued_seq < 0",
                            arguments: [Bounds.maxSeq]) ?? 0
                    if overBound > 0 { problems.append("\(overBound) devices with an issued seq out of bounds") }
                    let strayCertificates =
                        try Int.fetchOne(
                            db,
                            sql: """
                                SELECT COUNT(*) FROM issued_certs c JOIN bundles b ON b.jti = c.keygen_jti
                                    WHERE CAST(b.device AS BLOB) != CAST(c.device AS BLOB)
                                """) ?? 0
                    // (Retention may delete a keygen bundle once answered; the certificate keeps its jti.)
                    if strayCertificates > 0 {
                        problems.append("\(strayCertificates) certificates issued for another device's keygen")
                    }
                    let jtis = try String.fetchAll(db, sql: "SELECT jti FROM rotations WHERE jti IS NOT NULL LIMIT 50")
                    let campaigns = try String.fetchAll(db, sql: "SELECT id FROM campaigns LIMIT 10")
                    return (jtis, campaigns, problems)
                }
                #expect(problems.isEmpty, "seed \(seed), batch \(batches): \(problems)")
                if !problems.isEmpty { break }
                generator.jtis = jtis
                generator.campaigns = campaigns
            }
        }
        let devices = try await queue.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM devices") ?? 0 }
        let certificates = try await queue.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM issued_certs") ?? 0 }
        print(
            "engine fuzz: \(inputs) inputs in \(batches) batches; \(devices) devices; \(certificates) client "
                + "certificates issued; dropped \(daemon.drops.snapshot)")
        #expect(batches > 0)
        await harness.stop()
    }
}

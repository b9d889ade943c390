import CertrotCore
import Foundation
import Testing

/// The audit log's hashes are over JSONSerialization's bytes (sorted keys, slashes unescaped) since the log began:
/// ``CanonicalJSON`` must write exactly those bytes, or every record written before it stops verifying.
@Suite struct CanonicalJSONTests {
    func foundation(_ object: Any) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    @Test func theAuditLogsOwnRecords_areWrittenAsJSONSerializationWritesThem() throws {
        let record = AuditRecord(
            seq: 42, at: 1_765_000_000, kind: .bundleSigned, device: "nrf-352656100123456", subject: "a1b2/c3",
            body: AuditRecord.body([
                "seq": 7, "kid": "k/1", "exp": Int64(1_765_086_400), "format": "jws",
                "ops": [["tag": 42, "type": 0, "sha256": String(repeating: "ab", count: 32)]],
            ]), prev: AuditRecord.genesis)
        var object: [String: Any] = [
            "seq": record.seq, "at": record.at, "kind": record.kind.rawValue, "body": record.body, "prev": record.prev,
        ]
        object["device"] = record.device
        object["subject"] = record.subject
        #expect(CanonicalJSON.direct(object) == foundation(object))
        #expect(record.canonical == foundation(object))
        #expect(record.hash == Hex.sha256(foundation(object)))
        let campaign: [String: Any] = [
            "state": "running", "name": "broker CA 2027", "origin": "rpc", "wave": 0, "awaitingConfirmation": false,
            "previous": "created", "reason": Optional("a \"quoted\" reason\n"),
        ]
        #expect(CanonicalJSON.direct(campaign) == foundation(campaign))
        // A value this writer does not know (a Double) goes to JSONSerialization: the same bytes still.
        let other: [String: Any] = ["ratio": 0.5, "name": "x"]
        #expect(CanonicalJSON.direct(other) == nil)
        #expect(CanonicalJSON.data(other) == foundation(other))
    }

    /// Keys that sort differently by code unit, case-insensitively and numerically (`sha3` before `sha256`), and
    /// strings holding every kind of character JSON escapes or does not.
    @Test func randomObjects_matchJSONSerializationByteForByte() {
        var random = SplitMix64(seed: 35)
        let alphabet = Array("aAbBzZ019_-/.:é😀 \"\\\n\t\r\u{0}\u{1f}\u{7f}\u{2028}")
        func string(_ max: Int) -> String {
            String((0..<Int.random(in: 0...max, using: &random)).map { _ in alphabet.randomElement(using: &random)! })
        }
        func value(_ depth: Int) -> Any {
            switch Int.random(in: 0..<(depth > 2 ? 5 : 7), using: &random) {
            case 0: return string(12)
            case 1: return Int.random(in: Int.min...Int.max, using: &random)
            case 2: return Int64.random(in: -1000...1000, using: &random)
            case 3: return Bool.random(using: &random)
            case 4: return NSNull()
            case 5: return (0..<Int.random(in: 0...3, using: &random)).map { _ in value(depth + 1) }
            default: return object(depth + 1)
            }
        }
        func object(_ depth: Int) -> [String: Any] {
            var object: [String: Any] = [:]
            for _ in 0..<Int.random(in: 0...6, using: &random) { object[string(6)] = value(depth) }
            for key in ["sha256", "sha3", "Sha1", "a10", "a9", "notAfter", "notbefore", "A", "a", "_x", "-x"]
            where Bool.random(using: &random) {
                object[key] = value(depth)
            }
            return object
        }
        var mismatches: [String] = []
        for _ in 0..<2000 {
            let candidate = object(0)
            let ours = CanonicalJSON.direct(candidate)
            let theirs = foundation(candidate)
            if ours != theirs {
                mismatches.append(
                    String(decoding: theirs, as: UTF8.self) + " ≠ " + String(decoding: ours ?? [], as: UTF8.self))
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(3))")
    }
}

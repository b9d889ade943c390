import CertrotCore
import Foundation
import Testing

/// The audit log's hash chain and signed checkpoints (docs/security.md, "Audit log"): every kind of tampering
/// with a record is found, and named at the first bad record.
@Suite struct AuditChainTests {
    let key = SigningKey.generate()

    /// Ten records, a checkpoint, three more, a checkpoint.
    func chain() -> [AuditRecord] {
        var records: [AuditRecord] = []
        for index in 0..<14 {
            if index == 10 || index == 13 {
                records.append(try! AuditChain.checkpoint(after: records.last, at: 1000 + Int64(index), key: key))
            } else {
                records.append(
                    AuditChain.next(
                        after: records.last, at: 1000 + Int64(index), kind: .bundleSigned, device: "d\(index)",
                        subject: "jti-\(index)", body: ["seq": index, "ops": [["op": "write", "tag": 42]]]))
            }
        }
        return records
    }

    func problem(_ records: [AuditRecord], now: Int64? = nil) -> AuditChain.Problem? {
        do {
            _ = try AuditChain.verify(records, keys: [key.publicKey], now: now, maxCheckpointAge: 60)
            return nil
        } catch {
            return error
        }
    }

    @Test func anIntactChain_verifies_andReportsItsLastCheckpoint() throws {
        let records = chain()
        let summary = try AuditChain.verify(records, keys: [key.publicKey], now: 1020, maxCheckpointAge: 60)
        #expect(summary.records == 14 && summary.lastCheckpoint?.seq == 14 && summary.unsigned == 0)
        #expect(records[0].prev == AuditRecord.genesis && records[1].prev == records[0].hash)
    }

    @Test func anEditedRecord_isFound() {
        var records = chain()
        records[3].body = AuditRecord.body(["seq": 99])
        #expect(problem(records)?.seq == 4 && problem(records)?.reason.contains("edited") == true)
    }

    @Test func anEditedRecordWithItsHashRecomputed_breaksTheLinkAfterIt() {
        var records = chain()
        records[3] = AuditRecord(
            seq: 4, at: records[3].at, kind: .bundleSigned, device: "d3", subject: "forged", body: "{}",
            prev: records[3].prev)
        #expect(problem(records)?.seq == 5 && problem(records)?.reason.contains("link") == true)
    }

    @Test func aDeletedRecord_isFound() {
        var records = chain()
        records.remove(at: 5)
        #expect(problem(records)?.index == 5 && problem(records)?.reason.contains("missing") == true)
    }

    @Test func reorderedRecords_areFound() {
        var records = chain()
        records.swapAt(6, 7)
        #expect(problem(records)?.index == 6)
    }

    @Test func aCutTail_isFound_byTheAgeOfTheLastCheckpoint() {
        let records = Array(chain().prefix(12))  // the last checkpoint and what follows it are gone
        #expect(problem(records, now: 1013) == nil, "a minute after the last checkpoint it is still plausible")
        #expect(problem(records, now: 1100)?.reason.contains("end of the log is missing") == true)
        #expect(problem(Array(chain().dropFirst(2)))?.reason.contains("does not start") == true)
    }

    /// Retention cuts the log at a checkpoint and says so in an `audit.pruned` record: such a log verifies, and one
    /// cut at the same checkpoint without that record, or with a record naming another start, does not.
    @Test func aLogCutByRetention_verifies_onlyWhereAPrunedRecordSaysItStarts() {
        let full = chain()
        let anchor = full[10]
        func pruned(from: Int64, anchor hash: String) -> [AuditRecord] {
            var records = Array(full.dropFirst(10))
            records.append(
                AuditChain.next(
                    after: records.last, at: 1020, kind: .auditPruned, subject: String(from),
                    body: ["from": from, "anchor": hash, "records": 10]))
            records.append(try! AuditChain.checkpoint(after: records.last, at: 1021, key: key))
            return records
        }
        #expect(problem(pruned(from: 11, anchor: anchor.hash), now: 1030) == nil)
        #expect(problem(Array(full.dropFirst(10)))?.reason.contains("no audit.pruned record") == true)
        #expect(problem(pruned(from: 4, anchor: anchor.hash))?.reason.contains("no audit.pruned record") == true)
        #expect(problem(pruned(from: 11, anchor: full[3].hash))?.reason.contains("no audit.pruned record") == true)
        // Cut one record further (not at a checkpoint): refused whatever the record says.
        #expect(
            problem(Array(pruned(from: 11, anchor: anchor.hash).dropFirst()))?.reason.contains("does not start") == true
        )
    }

    @Test func aCheckpointByAnotherKey_orWithABrokenSignature_isFound() {
        var records = chain()
        let other = SigningKey.generate()
        records[10] = try! AuditChain.checkpoint(after: records[9], at: records[10].at, key: other)
        #expect(problem(records)?.reason.contains("unknown key") == true)
        records = chain()
        records[13].signature = records[10].signature
        #expect(problem(records)?.reason.contains("does not verify") == true)
        records = chain()
        records[2].signature = records[10].signature
        #expect(problem(records)?.reason.contains("not a checkpoint") == true)
    }

    @Test func theCanonicalForm_isStable_andIndependentOfKeyOrder() {
        let a = AuditRecord(
            seq: 1, at: 5, kind: .operatorRequest, device: nil, subject: "x", body: "{}", prev: AuditRecord.genesis)
        #expect(
            String(decoding: a.canonical, as: UTF8.self)
                == #"{"at":5,"body":"{}","kind":"operator.request","prev":"\#(AuditRecord.genesis)","seq":1,"subject":"x"}"#
        )
        #expect(AuditRecord.body(["b": 1, "a": "x/y"]) == #"{"a":"x/y","b":1}"#)
    }
}

import CertrotCore
import CertrotTestSupport
import Foundation
import GRDB
import Testing

extension CLITests {
    /// `certrot audit export|verify` on a store the engine wrote: an intact log verifies, from a file and from the
    /// store; an edited, deleted, reordered or cut record, in the file or in the store, is named.
    @Test func auditExportAndVerify_findEveryKindOfTampering_inAFileAndInTheStore() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        for device in ["d1", "d2", "d3"] { await h.inventory(device, holding: h.oldCA.sha256) }
        _ = try await h.rpc(
            "campaign.create",
            ["name": "c", "targets": [["tag": 43, "credential": "new-ca"]], "select": ["all": true]])
        await h.advance(1)
        let store = "sqlite:" + h.dir.appendingPathComponent("certrot.db").path
        let keyFile = h.dir.appendingPathComponent("signing-key.pem").path
        let pub = dir.appendingPathComponent("pub.pem").path
        let exported = try certrot("keys", "export", "--key", keyFile, "--format", "pem")
        try exported.output.write(toFile: pub, atomically: true, encoding: .utf8)
        let file = dir.appendingPathComponent("audit.jsonl").path
        let export = try certrot("audit", "export", "--store", store, "--out", file)
        #expect(export.status == 0, "\(export.output)")
        // The export and the store (its WAL included) are private to the daemon's user (red-team #32, finding 9).
        for path in [
            file, h.dir.appendingPathComponent("certrot.db").path, h.dir.appendingPathComponent("certrot.db-wal").path,
        ] {
            var info = stat()
            if stat(path, &info) == 0 {
                #expect(info.st_mode & 0o077 == 0, "\(path): \(String(info.st_mode & 0o777, radix: 8))")
            }
        }
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.count == 6, "3 bundles, the request, the campaign's state, a checkpoint")

        func verify(_ text: [String], _ extra: String...) throws -> (status: Int32, output: String) {
            let path = dir.appendingPathComponent("check-\(UUID().uuidString.prefix(6)).jsonl").path
            try (text.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            return try run(certrotBinary(), ["audit", "verify", path, "--key", pub] + extra)
        }
        let ok = try verify(lines)
        #expect(ok.status == 0 && ok.output.hasPrefix("ok: \(lines.count) records"), "\(ok.output)")
        let live = try certrot("audit", "verify", "--store", store, "--key", pub, "--now", String(h.clock.now))
        #expect(live.status == 0, "\(live.output)")

        var edited = lines
        edited[1] = edited[1].replacingOccurrences(of: "\"d2\"", with: "\"dX\"")
        let e = try verify(edited)
        #expect(e.status == 1 && e.output.contains("record 2") && e.output.contains("edited"), "\(e.output)")
        var deleted = lines
        deleted.remove(at: 2)
        let d = try verify(deleted)
        #expect(d.status == 1 && d.output.contains("record 3") && d.output.contains("missing"), "\(d.output)")
        var reordered = lines
        reordered.swapAt(1, 2)
        #expect(try verify(reordered).status == 1)
        let cut = Array(lines.dropLast())  // the checkpoint is gone: the last one is an hour's absence away
        let c = try verify(cut, "--now", String(h.clock.now + 3 * 3600))
        #expect(c.status == 1 && c.output.contains("end of the log is missing"), "\(c.output)")

        // In the store: one row edited, then one deleted.
        let queue = try DatabaseQueue(path: h.dir.appendingPathComponent("certrot.db").path)
        try await queue.write { db in try db.execute(sql: "UPDATE audit SET subject = 'forged' WHERE seq = 2") }
        let s1 = try certrot("audit", "verify", "--store", store, "--key", pub, "--no-age")
        #expect(s1.status == 1 && s1.output.contains("seq 2") && s1.output.contains("edited"), "\(s1.output)")
        let original = h.bundles(to: "d2").first
        try await queue.write { db in
            try db.execute(sql: "UPDATE audit SET subject = ? WHERE seq = 2", arguments: [original])
            try db.execute(sql: "DELETE FROM audit WHERE seq = 3")
        }
        let s2 = try certrot("audit", "verify", "--store", store, "--key", pub, "--no-age")
        #expect(s2.status == 1 && s2.output.contains("missing"), "\(s2.output)")
        try queue.close()
    }
}

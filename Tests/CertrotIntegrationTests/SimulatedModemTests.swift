import CertrotCore
import CertrotSimulator
import Crypto
import Foundation
import Testing

/// The simulator's modem makes KEYGEN outputs certrot accepts, and refuses what a real modem refuses.
@Suite struct SimulatedModemTests {
    @Test func aKeygenOutput_isAttestedByTheModemsIdentityKey_forItsTag() throws {
        var modem = SimulatedModem()
        for tag: Int64 in [16_842_753, 0xFFFF_FFF0] {
            let output = try KeygenOutput.parse(try modem.keygen(tag: tag))
            try output.verify(identityKey: modem.identityKey.publicKey, secTag: tag, uuid: modem.uuid)
            #expect(output.publicKey.rawRepresentation == modem.keys[tag]?.publicKey.rawRepresentation)
            #expect(output.csr.subject.description == "CN=\(modem.uuidString)")
            #expect(try output.csr.attributes.extensionRequest?.extensions.extendedKeyUsage == nil, "no clientAuth")
        }
        #expect(modem.uuidString.count == 36)
    }

    /// What the simulated modem prints is read by an implementation nobody here wrote: Nordic's
    /// `modem_credentials_parser` (nrfcloud-utils, pinned in scripts/bootstrap) parses every answer, logs that the
    /// attested digest matches the CSR, and reads the UUID and sec tag the modem put there.
    @Test func everyAnswerTheSimulatorPrints_isReadByNordicsParser() throws {
        var lines: [String] = []
        for _ in 0..<2 {
            var modem = SimulatedModem()
            for tag: Int64 in [0, 17, 16_842_753, 16_842_754, 2_147_483_647, 0xFFFF_FFF0] {
                lines.append("\(try modem.keygen(tag: tag)) \(modem.uuidString) \(tag)")
            }
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("certrot-keygen-\(UUID()).txt")
        defer { try? FileManager.default.removeItem(at: file) }
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/nordic-keygen-check").path
        let checked = try run("/usr/bin/env", ["python3", script, file.path])
        #expect(
            checked.status == 0 && checked.output.contains("\(lines.count) passed, 0 failed"),
            "nrfcloud-utils (scripts/bootstrap installs it):\n\(checked.output.suffix(3000))")
    }

    @Test func keygen_needsTheModemOffline_andAnEmptyTag() throws {
        var modem = SimulatedModem()
        modem.online = true
        #expect(throws: SimulatedModem.Failure.online) { _ = try modem.keygen(tag: 1) }
        modem.online = false
        _ = try modem.keygen(tag: 1)
        #expect(throws: SimulatedModem.Failure.tagInUse) { _ = try modem.keygen(tag: 1) }
        try modem.deleteKey(tag: 1)
        _ = try modem.keygen(tag: 1)
    }
}

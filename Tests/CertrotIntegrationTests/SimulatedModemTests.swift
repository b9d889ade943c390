import CertrotCore
import CertrotSimulator
import Crypto
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

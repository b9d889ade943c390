import CertrotCore
import CertrotServer
import CertrotTestSupport
import Foundation
import Testing

/// The engine's choice of bundle format (docs/protocol.md §12): compact for a device whose inventory lists
/// "cose", and a re-send of the very same bytes, after a restart or for missing parts.
@Suite struct CompactEngineTests {
    func inventory(_ h: EngineHarness, _ device: String, formats: [String]?) async {
        let inventory = Inventory(
            seq: 0, maxMessage: 512, creds: [.init(tag: 42, type: 0, sha256: h.oldCA.sha256)], formats: formats)
        await h.message(Topics.inventory(device), inventory.encoded())
    }

    func payloads(_ h: EngineHarness, to device: String) -> [[UInt8]] {
        h.publisher.published.filter { $0.topic == Topics.bundle(device) }.map(\.payload)
    }

    @Test func aDeviceListingCose_getsCompactParts_andTheSameBytesAgain() async throws {
        let h = try EngineHarness()
        defer { h.stop() }
        await h.connect()
        await inventory(h, "c1", formats: ["cose", "future-format"])
        await inventory(h, "j1", formats: nil)
        let compact = payloads(h, to: "c1")
        #expect(compact.count > 1 && compact.allSatisfy { $0.first == 0x84 }, "compact parts, cut for 512 bytes")
        #expect(payloads(h, to: "j1").allSatisfy { $0.first == UInt8(ascii: "{") }, "JWS parts for the other")
        let parts = try compact.map(CompactParts.parse)
        let cose = parts.flatMap(\.data)
        let decoded = try CompactBundle.verify(cose, keys: [h.key.publicKey])
        #expect(decoded.claims.sub == "c1" && decoded.claims.jti == Hex.encode(parts[0].jti))
        #expect(decoded.claims.ops.first?.pem == h.newCA.pem && decoded.claims.ops.first?.sha256 == h.newCA.sha256)

        // A restart before the broker acknowledged the parts re-sends the stored bundle: the same jti, seq, bytes.
        try await h.restart()
        await h.connect()
        #expect(payloads(h, to: "c1") == compact)
        #expect(try h.read { try $0.bundle(jti: decoded.claims.jti) }?.format == CompactBundle.format)

        // A missing part is re-sent as it was.
        await h.acknowledgePublishes()
        await h.ack("c1", jti: decoded.claims.jti, .incomplete, missing: [2])
        #expect(payloads(h, to: "c1").last == compact[1])
        #expect(payloads(h, to: "c1").count == compact.count + 1)
    }
}

import CertrotCore
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

/// Compact bundles (docs/protocol.md §12) through a real mosquitto: one fleet, half of it listing `"cose"` in its
/// inventory's formats. Every kind of op the daemon issues goes out in both formats: the CA chain (`write`
/// type 0), the next signing key (`trust_key`), and a client-certificate renewal (`keygen`, then `write` type 1,
/// `write` type 0 and `activate`).
@Suite(.serialized) struct CompactBundleEndToEndTests {
    @Test func aMixedFleet_getsEachDeviceItsFormat_andEveryDeviceEndsVerified() async throws {
        let h = try Harness()
        let count = 8
        var options = h.fleetOptions(devices: count)
        options.compactShare = 0.5
        let ids = (1...count).map { options.deviceID($0) }
        let lab = try ClientIdentityLab(dir: h.dir.appendingPathComponent("identities"), devices: ids)
        options.prepare = { lab.provision(&$0) }
        let next = SigningKey.generate()
        try KeyFile.write(next, to: h.path("next-key.pem"))
        let config = try h.writeConfig(
            extra: "keyRotation: {nextKey: \(h.path("next-key.pem")), threshold: 0.9}\n"
                + lab.yaml(caChain: "broker-ca", renewBefore: "20d", validity: "30d"))
        try h.startDaemon(configPath: config)
        let fleet = try h.startFleet(options)

        _ = try await h.waitForFleet { ($0["verified"] ?? 0) >= count }
        let deadline = Date().addingTimeInterval(60)
        func renewed() throws -> Int {
            try h.storeScalar(
                "SELECT COUNT(*) FROM rotations WHERE target = 'client-cert:device-identity' AND state = 'verified'")
                ?? 0
        }
        while Date() < deadline,
            try renewed() < count || !fleet.snapshot().allSatisfy({ $0.trustedKeys.contains(next.publicKey) })
        {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try renewed() == count, "every identity renewed")
        let devices = fleet.snapshot()
        let compact = devices.filter(\.takesCompact)
        #expect(compact.count == count / 2)
        let newDigest = h.newChain.sha256
        for device in devices {
            #expect(device.digest(tag: 42) == newDigest, "\(device.id) holds the new CA")
            #expect(device.trustedKeys.contains(next.publicKey), "\(device.id) trusts the next key")
            #expect(device.activeTag == ClientIdentityLab.tags[1], "\(device.id) moved to its standby tag")
            // The CA + trust_key bundle, the keygen and the install: each in the device's own format.
            #expect(device.compactApplied == (device.takesCompact ? 3 : 0), "\(device.id): \(device.compactApplied)")
        }
        let compactIDs = compact.map { "'\($0.id)'" }.joined(separator: ",")
        #expect(
            try h.storeScalar("SELECT COUNT(*) FROM bundles WHERE jws LIKE 'cose:%' AND device NOT IN (\(compactIDs))")
                == 0)
        #expect(
            try h.storeScalar("SELECT COUNT(*) FROM bundles WHERE jws NOT LIKE 'cose:%' AND device IN (\(compactIDs))")
                == 0)
        #expect(
            try h.storeScalar(
                "SELECT COUNT(*) FROM audit WHERE kind = 'bundle.signed' AND body LIKE '%\"format\":\"cose\"%'")
                == (count / 2) * 3)
        await h.stop()
    }
}

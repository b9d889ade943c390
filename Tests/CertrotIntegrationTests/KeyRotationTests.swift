import CertrotCore
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing

@Suite(.serialized) struct KeyRotationTests {
    @Test func nextSigningKey_isInstalledWithTrustKey_thenSignsTheNextRotation() async throws {
        let harness = try Harness()
        let next = SigningKey.generate()
        try KeyFile.write(next, to: harness.path("next-key.pem"))
        let config = try harness.writeConfig()
        var yaml = try String(contentsOfFile: config, encoding: .utf8)
        yaml += "\nkeyRotation: {nextKey: \(harness.path("next-key.pem")), threshold: 0.9}\n"
        try yaml.write(toFile: config, atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: config)
        var options = harness.fleetOptions(devices: 20)
        options.behaviours[options.deviceID(1)] = DeviceBehaviour(rejects: true)
        let fleet = try harness.startFleet(options)

        // One bundle per device carries the new CA and the trust_key op, signed by the current key.
        let status = try await harness.waitForFleet { ($0["verified"] ?? 0) == 19 }
        let nextStatus = (status["signing"] as? [String: Any])?["next"] as? [String: Any]
        var trusting = nextStatus?["devicesTrusting"] as? Int
        for _ in 0..<50 where trusting != 19 {
            try await Task.sleep(for: .milliseconds(100))
            let fresh = try await harness.rpc().result("fleet.status")
            trusting = ((fresh["signing"] as? [String: Any])?["next"] as? [String: Any])?["devicesTrusting"] as? Int
        }
        #expect(trusting == 19)
        let signing = try await harness.rpc().result("fleet.status")["signing"] as? [String: Any]
        let nextInfo = signing?["next"] as? [String: Any]
        #expect(signing?["kid"] as? String == harness.key.kid)
        #expect(nextInfo?["kid"] as? String == next.kid)
        #expect(nextInfo?["ready"] as? Bool == true)
        #expect((nextInfo?["share"] as? Double ?? 0) >= 0.9)
        for device in fleet.snapshot() where device.id != options.deviceID(1) {
            #expect(device.trustedKeys.map(\.kid) == [harness.key.kid, next.kid])
        }

        // Promote: the next key becomes the signing key, and a new CA goes out signed by it alone.
        await harness.stopDaemon()
        let newer = try CertificateFactory.rootCA(commonName: "Newer CA", days: 800)
        try newer.pem.write(toFile: harness.path("new-ca.pem"), atomically: true, encoding: .utf8)
        yaml = try String(contentsOfFile: config, encoding: .utf8)
            .replacingOccurrences(
                of: "signingKey: \(harness.path("signing-key.pem"))",
                with: "signingKey: \(harness.path("next-key.pem"))"
            )
            .components(separatedBy: "\nkeyRotation:").first!
        try yaml.write(toFile: config, atomically: true, encoding: .utf8)
        try harness.startDaemon(configPath: config)
        let newerDigest = try PEM.normalizeChain(newer.pem).sha256
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline,
            fleet.snapshot().filter({ $0.digest(tag: 42) == newerDigest }).count < 19
        {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(fleet.snapshot().filter { $0.digest(tag: 42) == newerDigest }.count == 19)
        await harness.stop()
    }
}

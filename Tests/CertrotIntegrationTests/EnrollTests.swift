import CertrotCore
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import GRDB
import Testing

/// `certrot enroll` (docs/factory.md) as a station runs it: the real binary on a serial port, here the modem
/// emulator's pseudo-terminal (whose fidelity ModemEmulatorTests checks with Nordic's own tools), the daemon's
/// config and a real SQLite store.
@Suite(.serialized) struct EnrollTests {
    let tagA = ClientIdentityLab.tags[0]
    let tagB = ClientIdentityLab.tags[1]

    /// A harness and a config whose policy `device-identity` has no identities file (`attestation: required`).
    func setup(validity: String = "30d", renewBefore: String = "10d") throws -> (Harness, ClientIdentityLab, String) {
        let h = try Harness()
        let lab = try ClientIdentityLab(dir: h.dir.appendingPathComponent("identities"), devices: [])
        let yaml = lab.yaml(caChain: "broker-ca", renewBefore: renewBefore, validity: validity)
            .split(separator: "\n").filter { !$0.hasPrefix("identities:") }.joined(separator: "\n")
        return (h, lab, try h.writeConfig(extra: yaml))
    }

    func enroll(
        _ h: Harness, config: String, pty: ModemPTY, _ extra: [String] = []
    ) async throws -> (status: Int32, output: String) {
        try await HTTPAPITests.runOffThePool(
            certrotBinary(),
            [
                "enroll", "--config", config, "--policy", "device-identity", "--port", pty.path, "--log",
                h.path("enroll.log"),
            ]
                + extra)
    }

    func rows(_ h: Harness, _ sql: String) throws -> [Row] {
        try DatabaseQueue(path: h.path("certrot.db")).read { db in try Row.fetchAll(db, sql: sql) }
    }

    @Test func aDeviceEnrolledOverItsATPort_isKnownFromBirth_andRenewedByTheDaemon_withoutAnIdentitiesFile()
        async throws
    {
        let (h, lab, config) = try setup()
        let pty = try ModemPTY(modem: ATModem(imei: "352656100000001"))
        defer { pty.stop() }
        let run = try await enroll(h, config: config, pty: pty)
        #expect(run.status == 0, "\(run.output)")
        let device = "nrf-352656100000001"
        #expect(
            run.output.contains("enrolled \(device) ") && run.output.contains("verified rewrites=0"), "\(run.output)")
        #expect(
            try String(contentsOfFile: h.path("enroll.log"), encoding: .utf8).contains("enrolled \(device)"),
            "the station's batch log")

        // The modem: the certificate for the key it generated in A, the CA chain beside it, B empty, online.
        let modem = pty.modem
        #expect(modem.cfun == 1)
        let certificate = try #require(modem.credential(tag: tagA, type: 1))
        #expect(modem.credential(tag: tagA, type: 0) == Array(h.newChain.pem.utf8))
        #expect(modem.hasKey(tag: tagA) && !modem.hasKey(tag: tagB), "B's key was only for the attestation")
        let issued = try rows(h, "SELECT serial, sha256, state, tag, pem FROM issued_certs WHERE device = '\(device)'")
        try #require(issued.count == 1)
        #expect(issued[0]["state"] as String == "active" && issued[0]["tag"] as Int64 == tagA)
        #expect(issued[0]["pem"] as String == String(decoding: certificate, as: UTF8.self))
        // The store: the device, its active tag, its pinned identity key (the modem's own), the audit log.
        let learned = try rows(
            h, "SELECT candidates, pinned_at, uuid FROM learned_identities WHERE device = '\(device)'")
        #expect(
            learned.first?["candidates"] as String? == Hex.encode(modem.modem.identityKey.publicKey.x963Representation))
        #expect(learned.first?["uuid"] as String? == Hex.encode(modem.modem.uuid))
        let kinds = try rows(h, "SELECT kind FROM audit WHERE device = '\(device)' ORDER BY seq").map {
            $0[0] as String
        }
        #expect(kinds == ["certificate.issued", "identity.pinned", "device.enrolled"], "\(kinds)")

        // The daemon, on that store, knows the device before it connects.
        try h.startDaemon(configPath: config)
        let status = try await h.rpc().result("device.status", params: ["device": device], timeout: 10)
        let identity = try #require(status["clientCertificate"] as? [String: Any], "\(status)")
        #expect(identity["serial"] as? String == issued[0]["serial"] as String)
        #expect(identity["activeTag"] as? Int == Int(tagA))
        await h.stopDaemon()

        // Renewed as any device, with attestation required and no identities file: the key enrollment pinned.
        try h.startDaemon(
            configPath: try h.writeConfig(
                extra: lab.yaml(caChain: "broker-ca", renewBefore: "40d", validity: "90d")
                    .split(separator: "\n").filter { !$0.hasPrefix("identities:") }.joined(separator: "\n")))
        var options = h.fleetOptions(devices: 1)
        options.idPrefix = "nrf-3526561000"
        options.initial = [(42, 0, Array(h.newChain.pem.utf8))]
        options.prepare = { simulated in
            simulated.provisionIdentity(
                modem: modem.modem, tag: tagA, certificate: certificate, key: modem.modem.keys[tagA]!)
            simulated.provision(tag: tagA, type: 0, pem: Array(h.newChain.pem.utf8))
        }
        _ = try h.startFleet(options)
        let deadline = Date().addingTimeInterval(60)
        var states: [String] = []
        while Date() < deadline {
            states = try rows(h, "SELECT state FROM issued_certs WHERE device = '\(device)' ORDER BY issued_at").map {
                $0[0] as String
            }
            if states == ["revoked", "active"] { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(states == ["revoked", "active"], "the factory certificate superseded and revoked")
        await h.stop()
    }
}

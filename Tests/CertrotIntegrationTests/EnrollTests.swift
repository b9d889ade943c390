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

    /// What enrollment reads of the modem's answers, as real modems print them (not only as the emulator does):
    /// Tests/CertrotCoreTests/Vectors/real-modem/transcripts.md ([U1]: an nRF9160 DK, mfw 1.3.5) and Nordic's
    /// sdk-nrf test data (the full list, `AT+CGSN=1`, `AT%XMODEMUUID`).
    @Test func enrollmentReadsAnswersAsRealModemsPrintThem() {
        #expect(Enrollment.imei(["352656109480783"]) == "352656109480783")
        #expect(Enrollment.imei(["+CGSN: \"351358815178345\""]) == "351358815178345")
        let list = [
            #"%CMNG: 42,0,"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1""#,
            #"%CMNG: 16842753,0,"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1""#,
            #"%CMNG: 16842753,1,"C5B83285533307747ECB170B96C5B47F809D24CFE2BE553B4ED9B5D12551C08E""#,
            #"%CMNG: 16842753,2,"372A8D78BFF2AB42DA1AA559A1AE2B7AA6A4694CDA1427D18609311D525F370C""#,
            #"%CMNG: 4294967293,10,"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1""#,
        ]
        #expect(
            Enrollment.digests(list, tag: 16_842_753) == [
                0: "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1",
                1: "C5B83285533307747ECB170B96C5B47F809D24CFE2BE553B4ED9B5D12551C08E",
                2: "372A8D78BFF2AB42DA1AA559A1AE2B7AA6A4694CDA1427D18609311D525F370C",
            ])
        #expect(
            Enrollment.modemUUID(["%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9"])
                == ModemUUID.parse("25c95751-efa4-40d4-8b4a-1dcaab81fac9"))
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
        let status = try await h.firstResult("device.status", params: ["device": device])
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

/// What a station sees when something goes wrong: a clear message naming the AT command and the modem's answer,
/// exit 1, and a store that says what really happened.
@Suite(.serialized) struct EnrollFaultTests {
    let tagA = ClientIdentityLab.tags[0]
    let tagB = ClientIdentityLab.tags[1]
    let device = "nrf-352656100000001"
    let suite = EnrollTests()

    func issued(_ h: Harness) throws -> [(state: String, serial: String)] {
        try suite.rows(h, "SELECT state, serial FROM issued_certs ORDER BY issued_at, serial").map {
            ($0["state"] as String, $0["serial"] as String)
        }
    }

    func enrolledDevices(_ h: Harness) throws -> Int {
        try suite.rows(h, "SELECT COUNT(*) FROM devices")[0][0] as Int
    }

    @Test(arguments: [518, 527]) func aModemRefusingTheWrite_failsClearly_andTheCertificateIsRevokedAsNeverDelivered(
        code: Int
    ) async throws {
        let (h, _, config) = try suite.setup()
        var faults = ModemPTY.Faults()
        faults.errors["AT%CMNG=0"] = code
        let pty = try ModemPTY(modem: ATModem(), faults: faults)
        defer { pty.stop() }
        let run = try await suite.enroll(h, config: config, pty: pty)
        #expect(run.status == 1, "\(run.output)")
        #expect(run.output.contains("FAILED") && run.output.contains("AT%CMNG=0,\(tagA),1"), "\(run.output)")
        #expect(run.output.contains("+CME ERROR: \(code)"), "\(run.output)")
        #expect(try issued(h).map(\.state) == ["revoked"], "issued, then revoked: never delivered")
        let reason = try suite.rows(h, "SELECT body FROM audit WHERE kind = 'certificate.revoked'").first?[0] as String?
        #expect(reason?.contains("never delivered") == true, "\(reason ?? "")")
        #expect(try enrolledDevices(h) == 0, "a device whose write did not verify is not enrolled")
        #expect(pty.modem.cfun == 4, "the modem is left offline: nothing was verified")
        await h.stop()
    }

    @Test func aModemThatDoesNotAnswer_failsWithTheCommand_andNothingIsIssued() async throws {
        let (h, _, config) = try suite.setup()
        var faults = ModemPTY.Faults()
        faults.silent = "AT%KEYGEN"
        let pty = try ModemPTY(modem: ATModem(), faults: faults)
        defer { pty.stop() }
        let run = try await suite.enroll(h, config: config, pty: pty, ["--timeout", "1"])
        #expect(run.status == 1, "\(run.output)")
        #expect(run.output.contains("no answer within 3 s (AT%KEYGEN=\(tagA),2,0"), "\(run.output)")
        #expect(try issued(h).isEmpty && enrolledDevices(h) == 0)
        await h.stop()
    }

    /// A UART without flow control drops a byte of the certificate's long command, once: the modem stores what it
    /// got, its digest shows it, and enroll writes again.
    @Test func aByteDroppedOnTheLine_isFoundByTheDigest_andTheCertificateWrittenAgain() async throws {
        let (h, _, config) = try suite.setup()
        var faults = ModemPTY.Faults()
        faults.dropByteOnceAbove = 300
        let pty = try ModemPTY(modem: ATModem(), faults: faults)
        defer { pty.stop() }
        let run = try await suite.enroll(h, config: config, pty: pty)
        #expect(run.status == 0, "\(run.output)")
        #expect(pty.droppedBytes == 1)
        #expect(run.output.contains("verified rewrites=1"), "\(run.output)")
        let pem = try #require(try suite.rows(h, "SELECT pem FROM issued_certs").first?[0] as String?)
        #expect(pty.modem.credential(tag: tagA, type: 1) == Array(pem.utf8))
        await h.stop()
    }

    /// The station is killed after the certificate was issued and before it was written: the store says the
    /// certificate was issued and the device is not enrolled; the next enrollment of the device revokes it.
    @Test func aStationKilledBetweenIssuanceAndWrite_leavesTheTruth_andTheNextRunRevokesTheOrphan() async throws {
        let (h, _, config) = try suite.setup()
        var faults = ModemPTY.Faults()
        faults.silent = "AT%CMNG=0"
        let pty = try ModemPTY(modem: ATModem(), faults: faults)
        defer { pty.stop() }
        let station = try ChildProcess(
            executable: certrotBinary(),
            arguments: [
                "enroll", "--config", config, "--policy", "device-identity", "--port", pty.path, "--timeout", "30",
            ],
            outputPath: h.path("station.log"))
        let deadline = Date().addingTimeInterval(30)
        // The store appears (and is migrated) once the station has started: until then there is nothing to read.
        func orphans() -> Int {
            guard FileManager.default.fileExists(atPath: h.path("certrot.db")) else { return 0 }
            return (try? issued(h).count) ?? 0
        }
        while Date() < deadline, orphans() == 0 { try await Task.sleep(for: .milliseconds(100)) }
        try await Task.sleep(for: .milliseconds(300))
        station.signal(SIGKILL)
        _ = station.waitForExit(timeout: 10)
        let orphan = try #require(try issued(h).first)
        #expect(try orphan.state == "issued" && enrolledDevices(h) == 0)

        pty.setFaults(ModemPTY.Faults())
        let run = try await suite.enroll(h, config: config, pty: pty)
        #expect(run.status == 0, "\(run.output)")
        let after = try issued(h)
        #expect(after.count == 2 && after.first { $0.serial == orphan.serial }?.state == "revoked")
        #expect(try after.contains { $0.state == "active" } && enrolledDevices(h) == 1)
        await h.stop()
    }

    /// Answers captured by another tool: the certificate is issued and recorded, and the commands printed are what
    /// the modem takes: sent to it, its digests match.
    @Test func answersCapturedElsewhere_giveTheExactCommandsToSend() async throws {
        let (h, _, config) = try suite.setup()
        let pty = try ModemPTY(modem: ATModem())
        defer { pty.stop() }
        let port = try SerialATPort(path: pty.path)
        #expect(try port.send("AT+CFUN=4", timeout: 5).final == .ok)
        var files: [String] = []
        for tag in [tagA, tagB] {
            let answer = try port.send("AT%KEYGEN=\(tag),2,0,\"CN=bench-7\"", timeout: 5)
            let file = h.path("keygen-\(tag).txt")
            try (answer.lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
            files.append(file)
        }
        let commands = h.path("commands.txt")
        let run = try await HTTPAPITests.runOffThePool(
            certrotBinary(),
            [
                "enroll", "--config", config, "--policy", "device-identity", "--device", "bench-7", "--commands",
                commands, "--keygen",
            ]
                + files)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("issued bench-7 ") && run.output.contains("not yet written"), "\(run.output)")
        // Replay the file into the modem, command by command (a command ends at a line end outside quotes).
        var lines: [String] = []
        var current = ""
        var quoted = false
        for character in try String(contentsOfFile: commands, encoding: .utf8) {
            if character == "\"" { quoted.toggle() }
            if character == "\n", !quoted {
                lines.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        for line in lines where line.hasPrefix("AT") {
            #expect(try port.send(line, timeout: 5).final == .ok, "\(line.prefix(30))")
        }
        let pem = try #require(
            try suite.rows(h, "SELECT pem FROM issued_certs WHERE device = 'bench-7'").first?[0] as String?)
        #expect(pty.modem.credential(tag: tagA, type: 1) == Array(pem.utf8))
        #expect(!pty.modem.hasKey(tag: tagB) && pty.modem.cfun == 1)
        await h.stop()
    }
}

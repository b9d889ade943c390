import CertrotCore
import CertrotServer
import CertrotSimulator
import CertrotTestSupport
import Foundation
import Testing
import X509

/// The modem emulator (``ATModem`` on a pseudo-terminal, ``ModemPTY``) checked by tools nobody here wrote:
/// Nordic's nrfcredstore and nrfcloud-utils' device_credentials_installer (PyPI, pinned in scripts/bootstrap) drive
/// it as they drive a real nRF91 and must succeed. Their port lookup lists only real serial ports; the shim in
/// Tests/nordic/shim makes it list the pty, and Tests/nordic/stubs stands in for the J-Link package they import.
@Suite(.serialized) struct ModemEmulatorTests {
    static let nordic = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("nordic").path

    /// Runs one of Nordic's tools against the pty, on a thread of its own (not the test pool's: the daemons of
    /// the suites running beside this one need it).
    static func nordicTool(_ pty: ModemPTY, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await HTTPAPITests.runOffThePool(
            "/usr/bin/env",
            ["NRF91_EMU_PTY=\(pty.path)", "PYTHONPATH=\(nordic)/shim:\(nordic)/stubs", "PYTHONDONTWRITEBYTECODE=1"]
                + arguments)
    }

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("modem-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func nrfcredstore_listsWritesDeletesAndGenerates_onTheEmulator() async throws {
        let pty = try ModemPTY(modem: ATModem())
        defer { pty.stop() }
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ca = try CertificateFactory.rootCA(commonName: "Broker CA", days: 100)
        let caFile = dir.appendingPathComponent("ca.pem").path
        try ca.pem.write(toFile: caFile, atomically: true, encoding: .utf8)

        let write = try await Self.nordicTool(
            pty, ["nrfcredstore", "--cmd-type", "at", pty.path, "write", "42", "ROOT_CA_CERT", caFile])
        #expect(write.status == 0, "\(write.output)")
        // nrfcredstore writes the file's text without its trailing newline; the modem lists the digest of what it got.
        let written = Array(ca.pem.trimmingCharacters(in: .newlines).utf8)
        #expect(pty.modem.credential(tag: 42, type: 0) == written)
        let list = try await Self.nordicTool(pty, ["nrfcredstore", "--cmd-type", "at", pty.path, "list"])
        #expect(list.status == 0, "\(list.output)")
        #expect(list.output.contains(Hex.sha256(written).uppercased()), "\(list.output)")
        #expect(list.output.contains("4294967293"), "the modem-reserved entries are listed as a real modem lists them")

        let csrFile = dir.appendingPathComponent("csr.der").path
        let generate = try await Self.nordicTool(
            pty,
            ["nrfcredstore", "--cmd-type", "at", pty.path, "generate", "50", csrFile, "--attributes", "CN=bench-1"])
        #expect(generate.status == 0, "\(generate.output)")
        // The DER as the modem made it (ecdsa-with-SHA256 with NULL parameters), read as certrot reads an answer.
        let der = Array(try Data(contentsOf: URL(fileURLWithPath: csrFile)))
        #expect(try KeygenOutput.parse(Base64URL.encode(der)).csr.subject.description == "CN=bench-1")
        #expect(pty.modem.hasKey(tag: 50))
        // A second KEYGEN into the tag that holds the key: 519, and the tool fails.
        let again = try await Self.nordicTool(
            pty, ["nrfcredstore", "--cmd-type", "at", pty.path, "generate", "50", csrFile])
        #expect(again.status != 0)

        let delete = try await Self.nordicTool(
            pty, ["nrfcredstore", "--cmd-type", "at", pty.path, "delete", "42", "ROOT_CA_CERT"])
        #expect(delete.status == 0, "\(delete.output)")
        #expect(pty.modem.credential(tag: 42, type: 0) == nil)
        // The probe the tools make by default (`at AT+CGSN`, for an AT shell) is answered ERROR: plain AT mode.
        let auto = try await Self.nordicTool(pty, ["nrfcredstore", pty.path, "list", "--tag", "50"])
        #expect(auto.status == 0 && auto.output.contains("50"), "\(auto.output)")
        #expect(pty.modem.received.contains("at AT+CGSN"))
    }

    @Test func deviceCredentialsInstaller_verify_succeedsOnTheEmulator() async throws {
        let pty = try ModemPTY(modem: ATModem())
        defer { pty.stop() }
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ca = try CertificateFactory.rootCA(commonName: "Device CA", days: 100)
        try ca.pem.write(toFile: dir.appendingPathComponent("ca.pem").path, atomically: true, encoding: .utf8)
        try ca.keyPEM.write(toFile: dir.appendingPathComponent("ca-key.pem").path, atomically: true, encoding: .utf8)
        let installer = try await Self.nordicTool(
            pty,
            [
                "device_credentials_installer", "--port", pty.path, "--ca", dir.appendingPathComponent("ca.pem").path,
                "--ca-key", dir.appendingPathComponent("ca-key.pem").path, "--csv", "", "--verify", "-d",
            ])
        #expect(installer.status == 0, "\(installer.output.suffix(3000))")
        // What it wrote is what the emulator holds: a certificate for the key the emulated modem generated.
        let tag: Int64 = 16_842_753
        let written = try #require(pty.modem.credential(tag: tag, type: 1))
        let leaf = try Certificate(
            pemEncoded: String(decoding: written, as: UTF8.self).replacingOccurrences(of: "\r", with: ""))
        let key = try #require(pty.modem.modem.keys[tag])
        #expect(leaf.publicKey == Certificate.PublicKey(key.publicKey))
        #expect(leaf.subject.description == "CN=\(pty.modem.modem.uuidString)", "a real modem's CSR names its UUID")
        #expect(pty.modem.credential(tag: tag, type: 0) != nil)
    }

    /// The error codes certrot's enrollment relies on, through the serial port code it uses.
    @Test func theEmulator_answersAsAnNRF91_overASerialPort() throws {
        let pty = try ModemPTY(modem: ATModem())
        defer { pty.stop() }
        let port = try SerialATPort(path: pty.path)
        func send(_ command: String) throws -> ATAnswer { try port.send(command, timeout: 5) }
        #expect(try send("AT+CMEE=1").final == .ok)
        let pem = try CertificateFactory.rootCA(commonName: "CA", days: 10).pem
        #expect(try send("AT%CMNG=0,7,0,\"\(pem)\"").final == .cme(518), "online: not allowed in active state")
        #expect(try send("AT%KEYGEN=7,2,0").final == .cme(518))
        #expect(try send("AT+CFUN=4").final == .ok)
        #expect(try send("AT+CFUN?").lines == ["+CFUN: 4"])
        #expect(try send("AT+CGSN").lines == [pty.modem.imei])
        #expect(try send("AT%XMODEMUUID").lines == ["%XMODEMUUID: \(pty.modem.modem.uuidString)"])
        // Leading spaces (the field report's 527), a cut-short block: invalid content.
        let spaced = pem.split(separator: "\n").map { " " + $0 }.joined(separator: "\n")
        #expect(try send("AT%CMNG=0,7,0,\"\(spaced)\"").final == .cme(527))
        #expect(try send("AT%CMNG=0,7,0,\"\(pem.prefix(300))\"").final == .cme(527))
        // LF and CR LF are both stored as sent (Nordic's installer writes CR LF and verifies that digest).
        #expect(try send("AT%CMNG=0,7,0,\"\(pem)\"").final == .ok)
        let crlf = pem.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(try send("AT%CMNG=0,8,0,\"\(crlf)\"").final == .ok)
        let listed = try send("AT%CMNG=1,8")
        #expect(listed.lines == ["%CMNG: 8,0,\"\(Hex.sha256(Array(crlf.utf8)).uppercased())\""])
        #expect(try send("AT%CMNG=3,9,0").final == .cme(513))
        let keygen = try send("AT%KEYGEN=9,2,0,\"CN=nrf-1\"")
        #expect(keygen.final == .ok && keygen.lines.first?.hasPrefix("%KEYGEN: \"") == true)
        let answer = try #require(keygen.lines.first?.split(separator: "\"").dropFirst().first)
        let output = try KeygenOutput.parse(String(answer))
        try output.verify(identityKey: pty.modem.modem.identityKey.publicKey, secTag: 9, uuid: pty.modem.modem.uuid)
        #expect(try send("AT%KEYGEN=9,2,0").final == .cme(519), "a tag that holds a key")
        #expect(try send("AT%NOSUCH").final == .error)
    }
}

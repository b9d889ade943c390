import ArgumentParser
import CertrotCore
import CertrotServer
import CertrotStore
import Foundation

/// `certrot enroll`: factory enrollment of one device (docs/factory.md).
struct EnrollCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Give a device its first identity through its modem's AT interface, recorded in certrot's store.",
        discussion: """
            With --port: the modem goes offline (AT+CFUN=4), its IMEI names the device (nrf-<IMEI>, or --device), \
            it generates a key in each of the policy's two sec tags (two attested answers: they give the modem's \
            identity key), the certificate for tag A's key is issued from the policy's issuer and written with the \
            policy's CA chain, read back by digest (rewritten on a mismatch, up to three times), tag B's key is \
            deleted and the modem goes online (AT+CFUN=1). The store then holds the certificate, the audit record, \
            the device with its identity key, UUID, active tag and expected inventory. A certificate whose write \
            did not verify is revoked, recorded as never delivered. \
            With --keygen: the two answers were captured elsewhere (Nordic's tools, say); the certificate is \
            issued and recorded, and the AT%CMNG commands to send are printed (and written to --commands). \
            Prints one line per device; --log appends it to a file. Exits 0 only for a device enrolled and \
            verified (with --keygen: issued and recorded), 1 when enrollment failed, 64 on a wrong command line. \
            On a SQLite store the daemon must not be running (one process per store); on PostgreSQL it may.
            """)

    @Option(help: "The daemon's config (store, issuers, clientCerts).") var config: String
    @Option(help: "The clientCerts policy the device enrolls under.") var policy: String
    @Option(help: "The modem's serial port (e.g. /dev/ttyACM0).") var port: String?
    @Option(help: "The port's baud rate.") var baud: Int = 115200
    @Flag(help: "Without RTS/CTS flow control (a UART with only TX and RX wired: long commands may lose bytes).")
    var noFlowControl = false
    @Option(help: "The device ID (default: nrf-<IMEI> as AT+CGSN answers).") var device: String?
    @Option(
        parsing: .upToNextOption,
        help:
            "KEYGEN answers captured elsewhere, one file per sec tag of the policy (- for standard input, one a line).")
    var keygen: [String] = []
    @Option(help: "With --keygen: write the AT commands to send here too.") var commands: String?
    @Option(help: "Append each device's summary line to this file (the station's batch log).") var log: String?
    @Option(help: "Seconds to wait for the modem's answer to a command (three times this for AT%KEYGEN).")
    var timeout: Double = 10

    func validate() throws {
        guard (port == nil) != keygen.isEmpty else { throw ValidationError("give --port or --keygen (not both)") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        if !keygen.isEmpty, device == nil {
            throw ValidationError("--keygen needs --device (there is no IMEI to read)")
        }
    }

    func run() throws {
        let settings = try DaemonSettings.resolve(try CertrotConfig.load(path: config))
        guard let policy = settings.clientCerts.policies.first(where: { $0.name == policy }) else {
            throw ValidationError(
                "no clientCerts policy '\(policy)' in \(config) (there are: "
                    + settings.clientCerts.policies.map(\.name).joined(separator: ", ") + ")")
        }
        let store = try openStore(url: settings.storeURL)
        defer { store.close() }
        var enrollment = Enrollment(policy: policy, store: store)
        enrollment.commandTimeout = timeout
        enrollment.keygenTimeout = timeout * 3
        enrollment.progress = { line in
            FileHandle.standardError.write(Data(("certrot enroll: " + line + "\n").utf8))
        }
        let line: String
        var failed = false
        do {
            if let port {
                let channel = try SerialATPort(path: port, baud: baud, flowControl: !noFlowControl)
                let result = try enrollment.run(on: channel, device: device)
                line =
                    "enrolled \(result.device) imei=\(result.imei ?? "-") uuid=\(result.uuid) "
                    + "serial=\(result.certificate.serial) tag=\(result.certificate.tag) notAfter=\(result.certificate.notAfter) "
                    + "verified rewrites=\(result.rewrites)"
            } else {
                line = try fromCapturedAnswers(enrollment, policy: policy)
            }
        } catch let error as EnrollmentError {
            line = "FAILED \(device ?? port ?? "-"): \(error)"
            failed = true
        } catch let error as CertrotError {
            line = "FAILED \(device ?? port ?? "-"): \(error.message)"
            failed = true
        }
        print(line)
        if let log {
            let stamp = ISO8601DateFormatter().string(from: Date())
            if let handle = FileHandle(forWritingAtPath: log)
                ?? {
                    FileManager.default.createFile(atPath: log, contents: nil, attributes: [.posixPermissions: 0o600])
                    return FileHandle(forWritingAtPath: log)
                }()
            {
                handle.seekToEndOfFile()
                handle.write(Data("\(stamp) \(line)\n".utf8))
                handle.closeFile()
            }
        }
        if failed { throw ExitCode(1) }
    }

    /// `--keygen`: the answers of the two tags, captured by another tool; prints the commands to write.
    func fromCapturedAnswers(_ enrollment: Enrollment, policy: ClientCertPolicy) throws -> String {
        var texts: [String] = []
        for path in keygen {
            // One answer a line, as the modem printed it (`%KEYGEN: "…"`) or just the quoted part.
            texts += try readInput(path).split(whereSeparator: \.isNewline).map {
                String($0).trimmingCharacters(in: .whitespaces)
            }.filter { !$0.isEmpty }
        }
        let device = device!
        try Enrollment.checkDevice(device, policy: policy)
        let checked = try enrollment.check(answers: texts, uuid: nil)
        let certificate = try enrollment.issue(device: device, checked: checked)
        try enrollment.record(device: device, certificate: certificate, checked: checked)
        let tag = certificate.tag
        let standby = policy.standby(active: tag)
        let script =
            [
                "AT+CFUN=4",
                "AT%CMNG=3,\(standby),2",
                "AT%CMNG=0,\(tag),1,\"\(certificate.pem)\"",
                "AT%CMNG=0,\(tag),0,\"\(policy.caChain.pem)\"",
                "AT%CMNG=1,\(tag)",
                "AT+CFUN=1",
            ].joined(separator: "\n") + "\n"
        print(script, terminator: "")
        let expected =
            "# AT%CMNG=1,\(tag) must list: type 1 \(certificate.sha256.uppercased()), "
            + "type 0 \(Hex.sha256(Array(policy.caChain.pem.utf8)).uppercased()), and type 2 (the key)"
        print(expected)
        if let commands {
            guard
                FileManager.default.createFile(
                    atPath: commands, contents: Data((script + expected + "\n").utf8),
                    attributes: [.posixPermissions: 0o644])
            else { throw EnrollmentError("cannot write \(commands)") }
        }
        return
            "issued \(device) uuid=\(ModemUUID.format(checked.uuid)) serial=\(certificate.serial) tag=\(tag) "
            + "notAfter=\(certificate.notAfter) not yet written (send the commands above, then check the digests)"
    }
}

import ArgumentParser
import CertrotConsole
import CertrotCore
import CertrotServer
import Foundation
import Logging

@main
struct Certrot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certrot",
        abstract: "Over-the-air certificate rotation for MQTT device fleets (nRF91 and peers).",
        discussion: """
            certrot watches each device's credential inventory, signs rotation bundles (ES256 JWS), publishes them \
            to <deviceID>/certs, and tracks every rotation until the device is seen using the new credential. \
            The device contract is docs/protocol.md.
            """,
        subcommands: [
            Serve.self, ConfigCommand.self, Keys.self, BundleCommand.self, Status.self, CampaignCommand.self,
            DeviceCommand.self, Simulate.self, IssuerCommand.self, CertCommand.self, IdentityCommand.self,
            AuditCommand.self, EnrollCommand.self,
        ])
}

struct LogOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func makeLogger(_ label: String) -> Logger {
        makeStandardErrorLogger(label, level: logLevel)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the rotation daemon.")

    @Option(name: .shortAndLong, help: "Path of the YAML configuration.")
    var config: String = "config/certrot.yaml"

    @OptionGroup var log: LogOptions

    func run() async throws {
        let logger = log.makeLogger("certrot")
        do {
            let loaded = try CertrotConfig.load(path: config)
            let (group, _) = try buildServices(config: loaded, logger: logger)
            try await group.run()
        } catch let error as CertrotError {
            throw DataCheckFailed(error.message)
        }
    }
}

/// The bytes of a file, or of standard input for nil or `-`.
/// A command's input failed a check (a bundle whose signature does not verify, a KEYGEN answer that does not
/// parse, a config with problems): ArgumentParser prints `Error: <message>` and exits 1, without the usage text a
/// wrong command line gets (exit 64).
struct DataCheckFailed: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func readInputBytes(_ path: String?) throws -> [UInt8] {
    if path == nil || path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
    return Array(try Data(contentsOf: URL(fileURLWithPath: path!)))
}

func readInput(_ path: String?) throws -> String {
    if path == nil || path == "-" {
        return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
    }
    return try String(contentsOfFile: path!, encoding: .utf8)
}

import ArgumentParser
import CertrotConsole
import CertrotMQTT
import Foundation
import Logging

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running daemon for fleet or device status (JSON-RPC over MQTT).")

    @OptionGroup var connection: BrokerOptions

    @Option(help: "A device ID: show its inventory, rotation and history.")
    var device: String?

    @Flag(help: "Print the raw JSON result.")
    var json = false

    func run() async throws {
        let client = try connection.connect()
        defer { client.close() }
        let sign = try connection.signer()
        let result: [String: Any]
        do {
            if let device {
                result = try await client.result(
                    "device.status", params: ["device": device], timeout: connection.timeout, sign: sign)
            } else {
                result = try await client.result("fleet.status", timeout: connection.timeout, sign: sign)
            }
        } catch {
            FileHandle.standardError.write(Data("certrot status: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if json || device != nil {
            print(
                String(
                    decoding: try JSONSerialization.data(
                        withJSONObject: result, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
        } else {
            print(FleetTable.render(result))
        }
    }
}

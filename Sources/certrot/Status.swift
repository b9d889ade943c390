import ArgumentParser
import CertrotMQTT
import Foundation
import Logging

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running daemon for fleet or device status (JSON-RPC over MQTT).")

    @Option(help: "Broker URL, mqtt://host[:port] or mqtts://host[:port].")
    var broker: String

    @Option(help: "CA file to verify an mqtts:// broker.")
    var ca: String?

    @Option(help: "Client certificate for an mqtts:// broker that asks for one.")
    var cert: String?

    @Option(help: "Private key of --cert.")
    var key: String?

    @Option(help: "A device ID: show its inventory, rotation and history.")
    var device: String?

    @Flag(help: "Print the raw JSON result.")
    var json = false

    @Option(help: "Seconds to wait for the reply.")
    var timeout: Double = 10

    func run() async throws {
        guard let url = MQTTOptions.parseURL(broker) else {
            throw ValidationError("--broker must be mqtt://host[:port] or mqtts://host[:port]")
        }
        if url.tls, ca == nil { throw ValidationError("an mqtts:// broker needs --ca") }
        var logger = Logger(label: "certrot.status")
        logger.logLevel = .error
        let tls = url.tls ? MQTTTLSOptions(caFile: ca!, certFile: cert, keyFile: key) : nil
        let client: RPCClient
        do {
            client = try RPCClient(host: url.host, port: url.port, tls: tls, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
        defer { client.close() }
        let result: [String: Any]
        do {
            if let device {
                result = try await client.result("device.status", params: ["device": device], timeout: timeout)
            } else {
                result = try await client.result("fleet.status", timeout: timeout)
            }
        } catch {
            FileHandle.standardError.write(Data("certrot status: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if json || device != nil {
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
        } else {
            print(FleetTable.render(result))
        }
    }
}

enum FleetTable {
    static let order = ["in_sync", "pending", "sent", "applied", "verified", "rejected", "failed", "timed_out"]

    static func render(_ result: [String: Any]) -> String {
        var lines = ["devices: \(result["devices"] ?? 0)"]
        let header = ["target"] + order
        var rows: [[String]] = [header]
        if let states = result["states"] as? [String: Int] {
            rows.append(["(all)"] + order.map { "\(states[$0] ?? 0)" })
        }
        for (name, value) in ((result["targets"] as? [String: Any]) ?? [:]).sorted(by: { $0.key < $1.key }) {
            let states = ((value as? [String: Any])?["states"] as? [String: Int]) ?? [:]
            rows.append([name] + order.map { "\(states[$0] ?? 0)" })
        }
        let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            lines.append(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        if let dropped = result["dropped"] as? [String: Int], !dropped.isEmpty {
            lines.append("dropped: " + dropped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

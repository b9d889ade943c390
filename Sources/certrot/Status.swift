import ArgumentParser
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

enum FleetTable {
    static let order = [
        "in_sync", "pending", "sent", "applied", "verified", "rejected", "failed", "timed_out", "cancelled",
    ]

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
            lines.append(
                zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        if let dropped = result["dropped"] as? [String: Int], !dropped.isEmpty {
            lines.append(
                "dropped: " + dropped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

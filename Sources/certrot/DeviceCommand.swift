import ArgumentParser
import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// Connection options shared by the commands that talk to a running daemon.
struct BrokerOptions: ParsableArguments {
    @Option(help: "Broker URL, mqtt://host[:port] or mqtts://host[:port].")
    var broker: String
    @Option(help: "CA file to verify an mqtts:// broker.")
    var ca: String?
    @Option(help: "Client certificate for an mqtts:// broker that asks for one.")
    var cert: String?
    @Option(help: "Private key of --cert.")
    var key: String?
    @Option(
        help:
            "Operator signing key (PKCS#8 PEM): sign requests, as mutating methods need when operators are configured.")
    var operatorKey: String?
    @Option(help: "Seconds to wait for the reply.")
    var timeout: Double = 10

    func connect() throws -> RPCClient {
        guard let url = MQTTOptions.parseURL(broker) else {
            throw ValidationError("--broker must be mqtt://host[:port] or mqtts://host[:port]")
        }
        if url.tls, ca == nil { throw ValidationError("an mqtts:// broker needs --ca") }
        var logger = Logger(label: "certrot.cli")
        logger.logLevel = .error
        let tls = url.tls ? MQTTTLSOptions(caFile: ca!, certFile: cert, keyFile: key) : nil
        do {
            return try RPCClient(host: url.host, port: url.port, tls: tls, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func signer() throws -> (@Sendable ([UInt8]) -> String)? {
        guard let operatorKey else { return nil }
        let key: SigningKey
        do {
            key = try SigningKey(pem: try String(contentsOfFile: operatorKey, encoding: .utf8))
        } catch let error as CertrotError {
            throw ValidationError("\(operatorKey): \(error.message)")
        }
        // An operator key is a PEM file, in memory: signing it cannot fail.
        return { payload in try! JWS.sign(payload: payload, typ: "certrot-rpc+jwt", with: key) }
    }
}

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device", abstract: "List devices, or act on one, through the running daemon.",
        subcommands: [List.self, Retry.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List devices, filtered, a page at a time.")

        @OptionGroup var connection: BrokerOptions
        @Option(help: "Only devices with a rotation in this state (with --campaign: the member state).") var state:
            String?
        @Option(help: "Only members of this campaign.") var campaign: String?
        @Option(help: "Only devices holding a credential with this sha256.") var holding: String?
        @Option(help: "Only devices with a credential expiring before this Unix time.") var expiringBefore: Int64?
        @Option(help: "Devices per page (1…1000).") var limit: Int = 100
        @Option(help: "Start after this device ID (the previous page's `next`).") var after: String?
        @Flag(help: "Print the raw JSON result.") var json = false

        func run() async throws {
            var params: [String: Any] = ["limit": limit]
            params["state"] = state
            params["campaign"] = campaign
            params["holding"] = holding
            params["expiringBefore"] = expiringBefore
            params["after"] = after
            let result = try await CampaignCommand.call(connection, "device.list", params)
            if json { return try CampaignCommand.printJSON(result) }
            for device in result["devices"] as? [[String: Any]] ?? [] {
                var line = "\(device["device"] ?? "?")"
                let rotations = (device["rotations"] as? [String: String] ?? [:]).sorted { $0.key < $1.key }
                if !rotations.isEmpty {
                    line += "  " + rotations.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                }
                if let member = device["campaign"] as? [String: Any] {
                    line += "  campaign wave \((member["wave"] as? Int ?? 0) + 1) \(member["state"] ?? "?")"
                }
                print(line)
            }
            if let next = result["next"] as? String { print("next page: --after \(next)") }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a device's settled failures over (rejected, or failed/timed out with no retry left).")

        @OptionGroup var connection: BrokerOptions
        @Option(help: "The device ID.")
        var device: String
        @Option(help: "Only this target.")
        var target: String?

        func run() async throws {
            let client = try connection.connect()
            defer { client.close() }
            var params: [String: Any] = ["device": device]
            if let target { params["target"] = target }
            do {
                let result = try await client.result(
                    "device.retry", params: params, timeout: connection.timeout, sign: try connection.signer())
                let retried = (result["retried"] as? [String]) ?? []
                print(
                    retried.isEmpty
                        ? "nothing to retry for \(device)" : "retrying \(device): \(retried.joined(separator: ", "))")
            } catch let error as RPCClient.Failure {
                FileHandle.standardError.write(Data("certrot device retry: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

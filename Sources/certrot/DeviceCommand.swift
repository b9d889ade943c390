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
    @Option(help: "Operator signing key (PKCS#8 PEM): sign requests, as mutating methods need when operators are configured.")
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
        return { payload in JWS.sign(payload: payload, typ: "certrot-rpc+jwt", with: key) }
    }
}

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device", abstract: "Act on one device through the running daemon.", subcommands: [Retry.self])

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
                print(retried.isEmpty ? "nothing to retry for \(device)" : "retrying \(device): \(retried.joined(separator: ", "))")
            } catch let error as RPCClient.Failure {
                FileHandle.standardError.write(Data("certrot device retry: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

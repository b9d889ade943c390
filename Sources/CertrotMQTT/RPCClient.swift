import Foundation
import Logging
import Synchronization

/// A JSON-RPC 2.0 client for `certrot/rpc` over MQTT 5 (Response Topic + Correlation Data). Used by
/// `certrot status`, `certrot-lab demo` and the tests.
public final class RPCClient: Sendable {
    private let client: MQTTClient
    private let replyTopic: String
    private let waiters = Mutex<[String: CheckedContinuation<[UInt8], any Error>]>([:])
    private let ready = Mutex(false)

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public init(host: String, port: Int32, tls: MQTTTLSOptions? = nil, logger: Logger) throws {
        let id = UUID().uuidString.prefix(8).lowercased()
        replyTopic = "certrot/replies/\(id)"
        let box = Box()
        var options = MQTTOptions(host: host, port: port, clientID: "certrot-cli-\(id)", protocolVersion: .v5)
        options.keepAlive = 30
        options.tls = tls
        client = try MQTTClient(options: options, logger: logger) { event in box.handle?(event) }
        box.handle = { [weak self] event in self?.handle(event) }
        try client.start()
    }

    private final class Box: @unchecked Sendable {
        // Set once, before the client starts delivering events.
        var handle: (@Sendable (MQTTEvent) -> Void)?
    }

    private func handle(_ event: MQTTEvent) {
        switch event {
        case .connected:
            _ = try? client.subscribe([replyTopic], qos: 1)
        case .subscribed:
            ready.withLock { $0 = true }
        case .message(let message):
            guard let key = message.correlationData.map({ String(decoding: $0, as: UTF8.self) }),
                let waiter = waiters.withLock({ $0.removeValue(forKey: key) })
            else { return }
            waiter.resume(returning: message.payload)
        default:
            break
        }
    }

    /// Calls `method` and returns the reply's JSON object (with `result` or `error`). With `sign`, the request is
    /// sent as a JWS (typ `certrot-rpc+jwt`) over the request plus `iat` and a fresh `jti`: what the daemon wants
    /// for mutating methods when operators are configured.
    public func call(
        _ method: String, params: [String: Any] = [:], timeout: Double = 10,
        sign: (@Sendable ([UInt8]) -> String)? = nil
    ) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while !ready.withLock({ $0 }) {
            guard Date() < deadline else { throw Failure(message: "no connection to the broker within \(timeout) s") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let correlation = UUID().uuidString
        var request: [String: Any] = ["jsonrpc": "2.0", "id": correlation, "method": method, "params": params]
        var payload = try JSONSerialization.data(withJSONObject: request)
        if let sign {
            request["iat"] = Int64(Date().timeIntervalSince1970)
            request["jti"] = UUID().uuidString
            payload = Data(sign(Array(try JSONSerialization.data(withJSONObject: request))).utf8)
        }
        let reply: [UInt8] = try await withCheckedThrowingContinuation { continuation in
            waiters.withLock { $0[correlation] = continuation }
            do {
                try client.publish(
                    topic: "certrot/rpc", payload: Array(payload), qos: 1, responseTopic: replyTopic,
                    correlationData: Array(correlation.utf8))
            } catch {
                if let waiter = waiters.withLock({ $0.removeValue(forKey: correlation) }) {
                    waiter.resume(throwing: error)
                }
                return
            }
            Task { [weak self] in
                try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                if let waiter = self?.waiters.withLock({ $0.removeValue(forKey: correlation) }) {
                    waiter.resume(throwing: Failure(message: "no reply to \(method) within \(timeout) s"))
                }
            }
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
            throw Failure(message: "reply is not a JSON object")
        }
        return object
    }

    /// Calls `method` and returns `result`, throwing the JSON-RPC error if there is one.
    public func result(
        _ method: String, params: [String: Any] = [:], timeout: Double = 10,
        sign: (@Sendable ([UInt8]) -> String)? = nil
    ) async throws -> [String: Any] {
        let reply = try await call(method, params: params, timeout: timeout, sign: sign)
        if let error = reply["error"] as? [String: Any] {
            throw Failure(message: "\(method): \(error["message"] ?? "error") (\(error["code"] ?? "?"))")
        }
        guard let result = reply["result"] as? [String: Any] else { throw Failure(message: "\(method): no result") }
        return result
    }

    public func close() { client.stop() }
}

import CertrotCore
import CertrotMQTT
import Foundation
import Synchronization

/// A plain MQTT client for tests that act as a device or an attacker: publishes anything (retained if asked), and
/// records what arrives on the topics it subscribes to.
final class Peer: Sendable {
    private final class Inbox: Sendable {
        let messages = Mutex<[MQTTMessage]>([])
    }

    let client: MQTTClient
    private let inbox = Inbox()

    init(
        _ harness: Harness, id: String = "peer-\(UUID().uuidString.prefix(8))", subscribe filters: [String] = [],
        v5: Bool = false
    ) async throws {
        let (stream, input) = AsyncStream.makeStream(of: MQTTEvent.self)
        let client = try MQTTClient(
            options: MQTTOptions(
                host: harness.broker.host, port: harness.broker.port, clientID: id, protocolVersion: v5 ? .v5 : .v311),
            logger: harness.logger
        ) { input.yield($0) }
        self.client = client
        try client.start()
        let inbox = self.inbox
        let connected = AsyncStream.makeStream(of: Void.self)
        Task {
            for await event in stream {
                switch event {
                case .connected:
                    if filters.isEmpty { connected.continuation.yield() } else { _ = try? client.subscribe(filters) }
                case .subscribed:
                    connected.continuation.yield()
                case .message(let message): inbox.messages.withLock { $0.append(message) }
                default: break
                }
            }
        }
        for await _ in connected.stream { break }
    }

    func send(_ topic: String, _ payload: String, retain: Bool = false, responseTopic: String? = nil) throws {
        try client.publish(topic: topic, payload: Array(payload.utf8), retain: retain, responseTopic: responseTopic)
    }

    /// Messages received so far on `topic` (all topics when nil).
    func messages(on topic: String? = nil) -> [MQTTMessage] {
        inbox.messages.withLock { list in topic.map { t in list.filter { $0.topic == t } } ?? list }
    }

    /// Waits until `done` holds for what was received, or `timeout` seconds pass; returns what was received.
    @discardableResult
    func wait(timeout: Double = 20, until done: ([MQTTMessage]) -> Bool) async throws -> [MQTTMessage] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let now = messages()
            if done(now) { return now }
            try await Task.sleep(for: .milliseconds(50))
        }
        return messages()
    }

    func stop() { client.stop() }
}

/// JSON-RPC over a plain MQTT 3.1.1 connection with `reply_to`: for requests the RPC client would not send (raw
/// payloads, chosen `iat`s).
final class RawRPC: Sendable {
    let peer: Peer
    let replyTopic: String

    init(_ harness: Harness, replyTopic: String = "certrot/replies/raw-\(UUID().uuidString.prefix(6))") async throws {
        self.replyTopic = replyTopic
        peer = try await Peer(harness, subscribe: [replyTopic])
    }

    /// Sends `payload` as it is to certrot/rpc and waits for the reply whose `id` is `id`.
    func call(id: String, payload: String, timeout: Double = 10) async throws -> [String: Any]? {
        try peer.send(Topics.rpc, payload)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            for message in peer.messages(on: replyTopic) {
                if let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any],
                    object["id"] as? String == id
                {
                    return object
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    func stop() { peer.stop() }
}

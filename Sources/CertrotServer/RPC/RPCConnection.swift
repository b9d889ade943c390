import CertrotCore
import CertrotMQTT
import Logging
import Synchronization

/// The daemon's second MQTT connection, for JSON-RPC alone. On the main connection an operator's request queued
/// behind a campaign's traffic in both directions — thousands of acks and inventories from the broker, a window of
/// bundle parts to it, each in order — and so did the reply. Here requests come in and replies go out on their own.
/// It subscribes to `certrot/rpc` while this daemon answers requests: always on one node, on the leader in a
/// cluster. Its message ids are its own: nothing published here is tracked by the engine's in-flight window.
final class RPCConnection: Sendable {
    private struct State {
        var client: MQTTClient?
        var connected = false
        var wanted: Bool
    }

    private let state: Mutex<State>
    private let logger: Logger

    init(answering: Bool, logger: Logger) {
        state = Mutex(State(wanted: answering))
        self.logger = logger
    }

    /// Connects as `options.clientID`; `onRequest` gets every message on `certrot/rpc`, on libmosquitto's thread.
    func start(options: MQTTOptions, onRequest: @escaping @Sendable (MQTTMessage) -> Void) throws {
        let client = try MQTTClient(options: options, logger: logger) { [self] event in
            switch event {
            case .connected:
                state.withLock { state in
                    state.connected = true
                    if state.wanted { subscription(true, state.client) }
                }
            case .disconnected: state.withLock { $0.connected = false }
            case .message(let message) where message.topic == Topics.rpc: onRequest(message)
            case .log(let message): logger.error("rpc connection: \(message)")
            default: break
            }
        }
        state.withLock { $0.client = client }
        try client.start()
    }

    /// Whether this daemon answers requests now.
    var isAnswering: Bool { state.withLock { $0.wanted } }

    /// Whether this daemon answers requests now (a replica that gains or loses the cluster's leadership).
    func answer(_ answering: Bool) {
        state.withLock { state in
            guard state.wanted != answering else { return }
            state.wanted = answering
            if state.connected { subscription(answering, state.client) }
        }
    }

    private func subscription(_ on: Bool, _ client: MQTTClient?) {
        do {
            if on {
                try client?.subscribe([Topics.rpc], qos: 1)
            } else {
                try client?.unsubscribe([Topics.rpc])
            }
        } catch {
            logger.error("rpc subscription failed", metadata: ["subscribe": "\(on)", "error": "\(error)"])
        }
    }

    /// Publishes a reply; false (logged) when libmosquitto could not take it now (the engine tries its replies
    /// again on its next flush; a status read's reply is lost, and its caller times out and may ask again).
    func publish(_ item: Outbound) -> Bool {
        guard let client = state.withLock({ $0.client }) else { return false }
        do {
            try client.publish(
                topic: item.topic, payload: item.payload, qos: 1, retain: item.retain,
                responseTopic: item.responseTopic,
                correlationData: item.correlationData)
            return true
        } catch {
            logger.warning("rpc reply not published", metadata: ["topic": "\(item.topic)", "error": "\(error)"])
            return false
        }
    }

    func stop() {
        state.withLock { $0.client }?.stop()
    }
}

import CMosquitto
import Foundation
import Logging
import Synchronization

/// A message received from the broker, copied out of libmosquitto's buffers.
public struct MQTTMessage: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int32
    public var retained: Bool
    /// MQTT 5 Response Topic, when the publisher set one.
    public var responseTopic: String?
    /// MQTT 5 Correlation Data, when the publisher set it.
    public var correlationData: [UInt8]?
    /// When the client took it from the network (Unix seconds); nil for a message made in-process.
    public var receivedAt: Double?

    public init(
        topic: String, payload: [UInt8], qos: Int32 = 1, retained: Bool = false,
        responseTopic: String? = nil, correlationData: [UInt8]? = nil, receivedAt: Double? = nil
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retained = retained
        self.responseTopic = responseTopic
        self.correlationData = correlationData
        self.receivedAt = receivedAt
    }
}

/// What the client reports, in order, from libmosquitto's network thread.
public enum MQTTEvent: Sendable {
    case connected(sessionPresent: Bool)
    case connectionRefused(code: Int32)
    case disconnected(code: Int32)
    case message(MQTTMessage)
    /// The broker acknowledged (PUBACK) the QoS 1 publish with this message id; `reasonCode` 0 is success.
    case published(mid: Int32, reasonCode: Int32)
    case subscribed(mid: Int32, granted: [Int32])
    /// An error or warning from libmosquitto itself (TLS handshake failures, refused sockets, protocol errors):
    /// the only place such failures are explained.
    case log(message: String)
}

public struct MQTTError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public var description: String {
        let text = String(cString: mosquitto_strerror(code))
        return "MQTT \(operation) failed: \(text) (\(code))"
    }
}

public struct MQTTOptions: Sendable {
    public enum ProtocolVersion: Sendable { case v311, v5 }

    public var host: String
    public var port: Int32
    public var clientID: String
    /// `false` keeps a persistent session: QoS 1 messages that arrive while the client is away are kept.
    public var cleanSession: Bool
    public var protocolVersion: ProtocolVersion
    public var keepAlive: Int32 = 30
    public var username: String?
    public var password: String?
    /// MQTT 5 session expiry (seconds) for a persistent session.
    public var sessionExpiry: UInt32 = 7 * 24 * 3600
    /// Outgoing QoS 1 messages in flight at once inside libmosquitto.
    public var maxInflight: UInt32 = 100
    /// TLS, for `mqtts://` brokers.
    public var tls: MQTTTLSOptions?

    public init(
        host: String, port: Int32, clientID: String, cleanSession: Bool = true,
        protocolVersion: ProtocolVersion = .v311
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.cleanSession = cleanSession
        self.protocolVersion = protocolVersion
    }

    /// A parsed broker URL.
    public struct URL: Sendable, Equatable {
        public var host: String
        public var port: Int32
        /// `mqtts://`: TLS with server verification.
        public var tls: Bool
    }

    /// Parses `mqtt://host[:port]` (default 1883) and `mqtts://host[:port]` (default 8883); IPv6 as `[::1]`.
    public static func parseURL(_ url: String) -> URL? {
        let tls: Bool
        let rest: Substring
        if url.hasPrefix("mqtt://") {
            tls = false
            rest = url.dropFirst("mqtt://".count)
        } else if url.hasPrefix("mqtts://") {
            tls = true
            rest = url.dropFirst("mqtts://".count)
        } else {
            return nil
        }
        let authority =
            rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard !authority.isEmpty else { return nil }
        let defaultPort: Int32 = tls ? 8883 : 1883
        var host = authority
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        }
        guard !host.isEmpty else { return nil }
        var port = defaultPort
        if let portText {
            guard let parsed = Int32(portText), (1...65535).contains(parsed) else { return nil }
            port = parsed
        }
        return URL(host: host, port: port, tls: tls)
    }
}

/// TLS settings for `mqtts://`: the broker is verified against `caFile` with hostname checks on; `certFile` and
/// `keyFile` authenticate the client when the broker asks for a certificate.
public struct MQTTTLSOptions: Sendable, Equatable {
    public var caFile: String
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }

    /// Throws a readable error for a missing or unreadable file, naming the setting.
    public func validate() throws {
        for (name, path) in [("ca", caFile), ("cert", certFile), ("key", keyFile)] {
            guard let path else { continue }
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw MQTTConfigurationError(message: "broker.tls.\(name): cannot read \(path)")
            }
        }
        if (certFile == nil) != (keyFile == nil) {
            throw MQTTConfigurationError(message: "broker.tls: cert and key go together; give both or neither")
        }
    }
}

public struct MQTTConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// What the C callbacks reach through libmosquitto's `obj` pointer.
private final class CallbackBox: @unchecked Sendable {
    // Immutable after init; `onEvent` is itself Sendable.
    let onEvent: @Sendable (MQTTEvent) -> Void
    init(onEvent: @escaping @Sendable (MQTTEvent) -> Void) { self.onEvent = onEvent }
}

private let libraryInit: Int32 = mosquitto_lib_init()

/// A libmosquitto client in threaded mode: libmosquitto owns one network thread, reconnects by itself, and
/// reports through `onEvent` on that thread. The handler must return quickly and must not call ``stop()``.
///
/// `@unchecked Sendable`: the handle is only used through libmosquitto calls that are thread-safe in threaded
/// mode (publish, subscribe, disconnect); setup happens in `init`; publish and subscribe run under `state`'s lock
/// and refuse once stopped, and the handle is destroyed under that lock, so no call can reach a freed handle.
public final class MQTTClient: @unchecked Sendable {
    private let handle: OpaquePointer
    private let box: Unmanaged<CallbackBox>
    private let options: MQTTOptions
    private let logger: Logger
    private let state = Mutex<State>(State())

    private struct State {
        var started = false
        var stopped = false
    }

    public init(options: MQTTOptions, logger: Logger, onEvent: @escaping @Sendable (MQTTEvent) -> Void) throws {
        _ = libraryInit
        self.options = options
        self.logger = logger
        let box = Unmanaged.passRetained(CallbackBox(onEvent: onEvent))
        guard let handle = mosquitto_new(options.clientID, options.cleanSession, box.toOpaque()) else {
            box.release()
            throw MQTTError(operation: "create client", code: MOSQ_ERR_NOMEM.rawValue)
        }
        self.handle = handle
        self.box = box
        let version: Int32 = options.protocolVersion == .v5 ? Int32(MQTT_PROTOCOL_V5) : Int32(MQTT_PROTOCOL_V311)
        mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, version)
        // Small messages go out at once: with Nagle's algorithm a request and its reply each waited ~40 ms for
        // the peer's delayed ACK.
        mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1)
        mosquitto_max_inflight_messages_set(handle, options.maxInflight)
        mosquitto_reconnect_delay_set(handle, 1, 10, true)
        if let username = options.username {
            let rc = mosquitto_username_pw_set(handle, username, options.password)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                mosquitto_destroy(handle)
                box.release()
                throw MQTTError(operation: "set username", code: rc)
            }
        }
        if let tls = options.tls {
            do {
                try tls.validate()
            } catch {
                mosquitto_destroy(handle)
                box.release()
                throw error
            }
            var rc = mosquitto_tls_set(handle, tls.caFile, nil, tls.certFile, tls.keyFile, nil)
            if rc == MOSQ_ERR_SUCCESS.rawValue { rc = mosquitto_tls_insecure_set(handle, false) }
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                mosquitto_destroy(handle)
                box.release()
                throw MQTTError(operation: "configure TLS", code: rc)
            }
        }
        installCallbacks()
    }

    deinit {
        stop()
    }

    private func installCallbacks() {
        mosquitto_log_callback_set(handle) { _, obj, level, message in
            guard level == MOSQ_LOG_ERR || level == MOSQ_LOG_WARNING, let message else { return }
            let box = Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
            box.onEvent(.log(message: String(cString: message)))
        }
        mosquitto_connect_v5_callback_set(handle) { _, obj, rc, flags, _ in
            let box = Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
            if rc == 0 {
                box.onEvent(.connected(sessionPresent: flags & 1 == 1))
            } else {
                box.onEvent(.connectionRefused(code: rc))
            }
        }
        mosquitto_disconnect_v5_callback_set(handle) { _, obj, rc, _ in
            let box = Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
            box.onEvent(.disconnected(code: rc))
        }
        mosquitto_publish_v5_callback_set(handle) { _, obj, mid, reason, _ in
            let box = Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
            box.onEvent(.published(mid: mid, reasonCode: reason))
        }
        mosquitto_subscribe_v5_callback_set(handle) { _, obj, mid, count, granted, _ in
            let box = Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
            let codes = (0..<Int(count)).map { granted![$0] }
            box.onEvent(.subscribed(mid: mid, granted: codes))
        }
        mosquitto_message_v5_callback_set(handle) { _, obj, message, props in
            let box = Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
            guard let message = message?.pointee, let topicPointer = message.topic else { return }
            let payload: [UInt8]
            if let raw = message.payload, message.payloadlen > 0 {
                payload = Array(UnsafeRawBufferPointer(start: raw, count: Int(message.payloadlen)))
            } else {
                payload = []
            }
            var responseTopic: String?
            var correlation: [UInt8]?
            if props != nil {
                var value: UnsafeMutablePointer<CChar>?
                if mosquitto_property_read_string(props, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &value, false)
                    != nil,
                    let value
                {
                    responseTopic = String(cString: value)
                    free(value)
                }
                var data: UnsafeMutableRawPointer?
                var length: UInt16 = 0
                if mosquitto_property_read_binary(
                    props, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &data, &length, false) != nil, let data
                {
                    correlation = Array(UnsafeRawBufferPointer(start: data, count: Int(length)))
                    free(data)
                }
            }
            box.onEvent(
                .message(
                    MQTTMessage(
                        topic: String(cString: topicPointer), payload: payload, qos: message.qos,
                        retained: message.retain, responseTopic: responseTopic, correlationData: correlation,
                        receivedAt: Date().timeIntervalSince1970)))
        }
    }

    /// Starts the network thread and connects. Returns once the connection attempt is under way; `.connected`
    /// follows on the event handler. Retries the initial TCP connection for up to `timeout` seconds.
    public func start(timeout: Double = 10) throws {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        let deadline = Date().addingTimeInterval(timeout)
        var rc: Int32
        repeat {
            if options.protocolVersion == .v5 {
                var props: OpaquePointer?
                if !options.cleanSession {
                    mosquitto_property_add_int32(
                        &props, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), options.sessionExpiry)
                }
                rc = mosquitto_connect_bind_v5(handle, options.host, options.port, options.keepAlive, nil, props)
                mosquitto_property_free_all(&props)
            } else {
                rc = mosquitto_connect_bind_async(handle, options.host, options.port, options.keepAlive, nil)
            }
            if rc == MOSQ_ERR_SUCCESS.rawValue { break }
            logger.debug("broker not reachable yet", metadata: ["host": "\(options.host)", "port": "\(options.port)"])
            Thread.sleep(forTimeInterval: 0.2)
        } while Date() < deadline
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError(operation: "connect to \(options.host):\(options.port)", code: rc)
        }
        let loop = mosquitto_loop_start(handle)
        guard loop == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(operation: "start network loop", code: loop) }
    }

    /// Publishes and returns the message id (matched by `.published` for QoS 1).
    @discardableResult
    public func publish(
        topic: String, payload: [UInt8], qos: Int32 = 1, retain: Bool = false,
        responseTopic: String? = nil, correlationData: [UInt8]? = nil
    ) throws -> Int32 {
        var mid: Int32 = 0
        var props: OpaquePointer?
        defer { mosquitto_property_free_all(&props) }
        if options.protocolVersion == .v5 {
            if let responseTopic {
                mosquitto_property_add_string(&props, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), responseTopic)
            }
            if let correlationData {
                correlationData.withUnsafeBytes { raw in
                    _ = mosquitto_property_add_binary(
                        &props, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), raw.baseAddress, UInt16(raw.count))
                }
            }
        }
        let rc = state.withLock { state -> Int32 in
            guard !state.stopped else { return MOSQ_ERR_NO_CONN.rawValue }
            return payload.withUnsafeBytes { raw in
                mosquitto_publish_v5(handle, &mid, topic, Int32(raw.count), raw.baseAddress, qos, retain, props)
            }
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(operation: "publish to \(topic)", code: rc) }
        return mid
    }

    /// Subscribes to one or more filters at `qos`; returns the message id matched by `.subscribed`.
    @discardableResult
    public func subscribe(_ filters: [String], qos: Int32 = 1) throws -> Int32 {
        var mid: Int32 = 0
        try withFilters(filters, operation: "subscribe") { handle, count, list in
            mosquitto_subscribe_multiple(handle, &mid, count, list, qos, 0, nil)
        }
        return mid
    }

    /// Removes subscriptions.
    public func unsubscribe(_ filters: [String]) throws {
        try withFilters(filters, operation: "unsubscribe") { handle, count, list in
            mosquitto_unsubscribe_multiple(handle, nil, count, list, nil)
        }
    }

    /// Calls `body` under the lock with `filters` as a C array of C strings; throws its non-success code.
    private func withFilters(
        _ filters: [String], operation: String,
        _ body: (OpaquePointer, Int32, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32
    ) throws {
        var cStrings = filters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let rc = state.withLock { state -> Int32 in
            guard !state.stopped else { return MOSQ_ERR_NO_CONN.rawValue }
            return cStrings.withUnsafeMutableBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: UnsafeMutablePointer<CChar>?.self, capacity: buffer.count) {
                    body(handle, Int32(filters.count), $0)
                }
            }
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(operation: operation, code: rc) }
    }

    /// Disconnects, stops the network thread and frees the client. Idempotent. Never call it from `onEvent`.
    public func stop() {
        let shouldStop = state.withLock { state -> Bool in
            guard !state.stopped else { return false }
            state.stopped = true
            return true
        }
        guard shouldStop else { return }
        // Not under the lock: a callback running on the network thread may still call publish, which then sees
        // `stopped` and fails instead of waiting for a lock held here while we join that thread.
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, false)
        // Under the lock: a publish that started before `stopped` was set finishes before the handle is freed.
        state.withLock { _ in mosquitto_destroy(handle) }
        box.release()
    }
}

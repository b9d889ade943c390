import CertrotCore
import CertrotMQTT
import CertrotServer
import CertrotStore
import Foundation
import Logging
import Synchronization

/// The real engine, as `certrot serve` wires it, on a real SQLite store in a temporary directory, with no broker:
/// a recording publisher takes its publishes and a manual clock gives it time. Tests deliver inventories, acks and
/// PUBACKs and read what it published and stored, in the spirit of NIO's `EmbeddedChannel`: no sockets, no sleeps.
/// For tests about the engine's decisions; the wire, restarts of processes and replicas keep real-broker tests.
package final class EngineHarness {
    /// What the engine published, in order, and the PUBACKs not yet delivered.
    package final class RecordingPublisher: Publisher {
        package struct Published: Sendable {
            package var mid: Int32
            package var topic: String
            package var payload: [UInt8]
            package var retain: Bool
        }

        private struct State {
            var published: [Published] = []
            var unacknowledged: [Int32] = []
            var nextMid: Int32 = 1
            var subscriptions: [String] = []
        }

        private let state = Mutex(State())
        /// Called with each publish as it is made (a test looking at the store at that moment).
        package let onPublish = Mutex<(@Sendable (Published) -> Void)?>(nil)

        package init() {}

        package func publish(
            topic: String, payload: [UInt8], qos: Int32, retain: Bool, responseTopic: String?, correlationData: [UInt8]?
        ) throws -> Int32 {
            let published = state.withLock { state in
                let mid = state.nextMid
                state.nextMid = mid == Int32.max ? 1 : mid + 1
                state.published.append(Published(mid: mid, topic: topic, payload: payload, retain: retain))
                state.unacknowledged.append(mid)
                return state.published[state.published.count - 1]
            }
            onPublish.withLock { $0 }?(published)
            return published.mid
        }

        package func subscribe(_ filters: [String], qos: Int32) throws -> Int32 {
            state.withLock { $0.subscriptions += filters }
            return 0
        }

        package func unsubscribe(_ filters: [String]) throws {
            state.withLock { state in state.subscriptions.removeAll { filters.contains($0) } }
        }

        package var published: [Published] { state.withLock { $0.published } }
        package var subscriptions: [String] { state.withLock { $0.subscriptions } }

        /// Message ids published since the last call, whose PUBACKs the harness may now deliver.
        func takeUnacknowledged() -> [Int32] {
            state.withLock { state in
                defer { state.unacknowledged = [] }
                return state.unacknowledged
            }
        }
    }

    /// Wall-clock seconds (what the engine stores and signs) and monotonic seconds, both moved by hand.
    package final class ManualClock: Sendable {
        private let seconds: Mutex<(wall: Int64, monotonic: Double)>

        package init(start: Int64 = Int64(Date().timeIntervalSince1970)) {
            seconds = Mutex((start, 1000))
        }

        package var now: Int64 { seconds.withLock { $0.wall } }
        package var monotonic: Double { seconds.withLock { $0.monotonic } }

        package func advance(_ delta: Int64) {
            seconds.withLock {
                $0.wall += delta
                $0.monotonic += Double(max(0, delta))
            }
        }
    }

    package let dir: URL
    package let clock: ManualClock
    package let key = SigningKey.generate()
    package let oldCA: CertificateChain
    package let newCA: CertificateChain
    package private(set) var publisher = RecordingPublisher()
    package private(set) var daemon: CertrotDaemon
    package private(set) var engine: Engine
    private var store: any RotationStore
    private let settings: DaemonSettings
    private var rpcCalls = 0

    /// - Parameters:
    ///   - targets: YAML list of targets (default: the new CA in tag 42); `$NEW` and `$OLD` name the chain files.
    ///   - extra: more top-level YAML.
    package init(
        ackTimeout: String = "20s", retry: String = "{base: 2s, factor: 2, cap: 10s, attempts: 3}",
        targets: String = "[{name: broker-ca, tag: 42, type: 0, chain: $NEW}]", extra: String = "",
        clock: ManualClock = ManualClock()
    ) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "certrot-engine-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        self.clock = clock
        let old = try CertificateFactory.rootCA(commonName: "Old CA", days: 20)
        let new = try CertificateFactory.rootCA(commonName: "New CA", days: 700)
        oldCA = try PEM.normalizeChain(old.pem)
        newCA = try PEM.normalizeChain(new.pem)
        let oldPath = dir.appendingPathComponent("old-ca.pem").path
        let newPath = dir.appendingPathComponent("new-ca.pem").path
        try old.pem.write(toFile: oldPath, atomically: true, encoding: .utf8)
        try new.pem.write(toFile: newPath, atomically: true, encoding: .utf8)
        let keyPath = dir.appendingPathComponent("signing-key.pem").path
        try KeyFile.write(key, to: keyPath)
        let yaml = """
            broker: {url: "mqtt://127.0.0.1:1", clientId: certrot-harness}
            store: sqlite:\(dir.appendingPathComponent("certrot.db").path)
            signingKey: \(keyPath)
            ackTimeout: \(ackTimeout)
            retry: \(retry)
            targets: \(targets.replacingOccurrences(of: "$NEW", with: newPath).replacingOccurrences(of: "$OLD", with: oldPath))
            catalogue: [{name: old-ca, chain: \(oldPath)}, {name: new-ca, chain: \(newPath)}]
            \(extra)
            """
        settings = try DaemonSettings.resolve(try CertrotConfig.parse(yaml: yaml))
        (daemon, engine, store) = try Self.make(settings: settings, clock: clock, publisher: publisher)
    }

    private static func make(
        settings: DaemonSettings, clock: ManualClock, publisher: RecordingPublisher
    ) throws -> (CertrotDaemon, Engine, any RotationStore) {
        var logger = Logger(label: "certrot.engine-harness")
        logger.logLevel = .critical
        let daemon = CertrotDaemon(settings: settings, logger: logger, clock: { clock.now })
        let store = try openStore(url: settings.storeURL)
        let engine = daemon.makeEngine(store: store)
        engine.monotonic = { clock.monotonic }
        engine.client = publisher
        try engine.startCampaigns()
        return (daemon, engine, store)
    }

    // MARK: Inputs

    /// Hands the engine one batch, as the daemon's inbox would.
    package func deliver(_ inputs: [EngineInput]) async {
        await engine.handle(inputs)
    }

    /// The broker connection comes up (the engine subscribes, and re-sends what it had not delivered).
    package func connect(sessionPresent: Bool = false) async {
        await deliver([.mqtt(.connected(sessionPresent: sessionPresent))])
    }

    /// `device` publishes an inventory: `tag` 42 holding `digest`.
    package func inventory(
        _ device: String, holding digest: String, seq: Int64 = 0, keys: [String]? = nil, retained: Bool = false
    ) async {
        let inventory = Inventory(seq: seq, creds: [.init(tag: 42, type: 0, sha256: digest)], keys: keys)
        await deliver([
            .mqtt(
                .message(MQTTMessage(topic: Topics.inventory(device), payload: inventory.encoded(), retained: retained))
            )
        ])
    }

    /// A message from a device on `topic`.
    package func message(_ topic: String, _ payload: [UInt8], retained: Bool = false) async {
        await deliver([.mqtt(.message(MQTTMessage(topic: topic, payload: payload, retained: retained)))])
    }

    /// `device` acks bundle `jti`.
    package func ack(_ device: String, jti: String, _ status: Ack.Status, code: Int? = nil, missing: [Int]? = nil) async
    {
        let ack = Ack(jti: jti, status: status, code: code, missing: missing)
        await deliver([.mqtt(.message(MQTTMessage(topic: Topics.ack(device), payload: ack.encoded())))])
    }

    /// Calls a JSON-RPC method as an operator would (MQTT 3.1.1 `reply_to`) and returns the reply's JSON object.
    package func rpc(_ method: String, _ params: [String: Any] = [:]) async throws -> [String: Any] {
        rpcCalls += 1
        let id = "h\(rpcCalls)"
        let replyTo = "certrot/replies/harness"
        let request: [String: Any] = [
            "jsonrpc": "2.0", "id": id, "method": method, "params": params, "reply_to": replyTo,
        ]
        let payload = Array(try JSONSerialization.data(withJSONObject: request))
        await deliver([.mqtt(.message(MQTTMessage(topic: Topics.rpc, payload: payload)))])
        for published in publisher.published.reversed() where published.topic == replyTo {
            if let reply = try JSONSerialization.jsonObject(with: Data(published.payload)) as? [String: Any],
                reply["id"] as? String == id
            {
                return reply
            }
        }
        throw HarnessError("no reply to \(method)")
    }

    package struct HarnessError: Error, CustomStringConvertible {
        package var description: String
        init(_ description: String) { self.description = description }
    }

    /// The broker acknowledges everything published so far.
    package func acknowledgePublishes() async {
        let mids = publisher.takeUnacknowledged()
        guard !mids.isEmpty else { return }
        await deliver(mids.map { .mqtt(.published(mid: $0, reasonCode: 0)) })
    }

    /// Time passes: `seconds` on both clocks, then a tick.
    package func advance(_ seconds: Int64) async {
        clock.advance(seconds)
        await deliver([.tick])
    }

    /// The daemon restarts on the same store: a new engine and publisher; nothing in memory survives.
    package func restart() async throws {
        store.close()
        publisher = RecordingPublisher()
        (daemon, engine, store) = try Self.make(settings: settings, clock: clock, publisher: publisher)
    }

    // MARK: What came out

    /// The bundle parts published to `device`, in order.
    package func parts(to device: String) -> [BundlePart] {
        publisher.published.filter { $0.topic == Topics.bundle(device) }.compactMap {
            try? BundlePart.parse($0.payload)
        }
    }

    /// The distinct bundles (jti) published to `device`, in order.
    package func bundles(to device: String) -> [String] {
        var seen: [String] = []
        for part in parts(to: device) where !seen.contains(part.jti) { seen.append(part.jti) }
        return seen
    }

    /// What the store holds of `device`'s rotations.
    package func rotations(_ device: String) throws -> [Rotation] {
        try store.read { tx in try tx.rotations(device: device) }
    }

    /// Reads the store.
    package func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try store.read(body)
    }

    /// Writes the store behind the engine's back (a test standing for an attacker, or for rows of the past).
    package func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        try store.write(body)
    }

    package func device(_ id: String) throws -> DeviceRecord? {
        try store.read { tx in try tx.device(id) }
    }

    package var drops: [String: Int] { daemon.drops.snapshot }

    /// What `/metrics` would answer now.
    package var metrics: String { daemon.metricsText(store: store) }

    package func stop() {
        store.close()
        try? FileManager.default.removeItem(at: dir)
    }
}

import CertrotCore
import CertrotMQTT
import Foundation
import Logging
import Synchronization

/// Options for a simulated fleet (`certrot simulate`).
public struct FleetOptions: Sendable {
    public var host: String
    public var port: Int32
    public var devices: Int
    public var idPrefix = "dev-"
    /// Pinned bundle-verification keys.
    public var keys: [VerificationKey]
    public var profile: DeviceProfile = .nrf91
    public var rejectRate = 0.0
    public var failRate = 0.0
    public var offlineRate = 0.0
    public var incompleteRate = 0.0
    /// Share of the devices (0…1, spread evenly by index) that list `"cose"` in their inventory's `formats` and
    /// take compact bundles (docs/protocol.md §12); the others take JWS only.
    public var compactShare = 0.0
    /// Seconds after start at which offline devices come online.
    public var offlineDelay = 3.0
    public var devicesPerConnection = 100
    /// Credentials every device holds at start (e.g. the CA being replaced).
    public var initial: [(tag: Int64, type: Int, pem: [UInt8])] = []
    /// Seconds without a new part before a device asks for the missing ones.
    public var stallAfter = 1.0
    public var seed: UInt64 = 1
    /// Per-device behaviour that overrides the rates (tests name devices explicitly).
    public var behaviours: [String: DeviceBehaviour] = [:]
    /// Called on every device before the fleet starts (give it a modem identity, say).
    public var prepare: (@Sendable (inout SimulatedDevice) -> Void)?
    /// Where `activate` tries the new identity for real: a TLS listener that requires client certificates. nil:
    /// an activation succeeds when the tag holds a certificate for the key the modem holds there.
    public var identityListener: IdentityListener?

    public struct IdentityListener: Sendable {
        public var host: String
        public var port: Int32
        /// The CA that signed the listener's certificate.
        public var caFile: String

        public init(host: String, port: Int32, caFile: String) {
            self.host = host
            self.port = port
            self.caFile = caFile
        }
    }

    public init(host: String, port: Int32, devices: Int, keys: [VerificationKey]) {
        self.host = host
        self.port = port
        self.devices = devices
        self.keys = keys
    }

    public func deviceID(_ index: Int) -> String { "\(idPrefix)\(String(format: "%05d", index))" }
}

/// Counters a fleet keeps while it runs.
public struct FleetStats: Sendable, Equatable {
    public var acks: [String: Int] = [:]
    public var inventoriesPublished = 0
    public var oversizeMessages = 0
    public var partsReceived = 0
}

/// A fleet of simulated devices, many per MQTT connection (3.1.1, QoS 1), doing what an nRF91 application does:
/// publish a retained inventory, reassemble parts, verify, write, ack, republish the inventory.
public final class SimulatedFleet: Sendable {
    public let options: FleetOptions
    private let logger: Logger
    private let connections: [FleetConnection]
    private let statsBox = StatsBox()

    public init(options: FleetOptions, logger: Logger) {
        self.options = options
        self.logger = logger
        var generator = SplitMix64(seed: options.seed)
        var devices: [SimulatedDevice] = []
        for index in 1...max(options.devices, 1) where index <= options.devices {
            let id = options.deviceID(index)
            let behaviour =
                options.behaviours[id]
                ?? DeviceBehaviour(
                    rejects: generator.nextUnit() < options.rejectRate,
                    failsOnce: generator.nextUnit() < options.failRate,
                    offlineAtFirst: generator.nextUnit() < options.offlineRate,
                    losesPartOnce: generator.nextUnit() < options.incompleteRate)
            var device = SimulatedDevice(id: id, behaviour: behaviour, profile: options.profile, keys: options.keys)
            device.takesCompact =
                (Double(index) * options.compactShare).rounded(.down)
                > (Double(index - 1) * options.compactShare).rounded(.down)
            for credential in options.initial {
                device.provision(tag: credential.tag, type: credential.type, pem: credential.pem)
            }
            options.prepare?(&device)
            if let listener = options.identityListener {
                device.connectionCheck = { certificate, key in
                    TLSProbe.connects(id: id, to: listener, certificate: certificate, key: key, logger: logger)
                }
            }
            devices.append(device)
        }
        let perConnection = max(1, options.devicesPerConnection)
        connections = stride(from: 0, to: devices.count, by: perConnection).map { start in
            FleetConnection(
                index: start / perConnection, devices: Array(devices[start..<min(start + perConnection, devices.count)])
            )
        }
    }

    /// Connects every connection and brings the online devices up. Offline devices follow after `offlineDelay`.
    public func start() throws {
        for connection in connections {
            try connection.start(options: options, logger: logger, stats: statsBox)
        }
    }

    public func stop() {
        for connection in connections { connection.stop() }
    }

    /// A copy of every device's state.
    public func snapshot() -> [SimulatedDevice] {
        connections.flatMap { $0.snapshot() }
    }

    public var stats: FleetStats { statsBox.value.withLock { $0 } }

    /// Changes a device's behaviour from now on (a test "fixes" rejecting devices, say).
    public func setBehaviour(_ behaviour: DeviceBehaviour, for id: String) {
        for connection in connections { connection.setBehaviour(behaviour, for: id) }
    }
}

final class StatsBox: Sendable {
    let value = Mutex(FleetStats())
}

enum ConnectionInput: Sendable {
    case mqtt(MQTTEvent)
    case tick
    case goOnline
}

/// One MQTT connection hosting several devices. A task owns the devices' state; `snapshot` reads it under a lock.
final class FleetConnection: Sendable {
    let index: Int
    private let devices: Mutex<[String: SimulatedDevice]>
    private let order: [String]
    private let runtime = Mutex<Runtime?>(nil)

    struct Runtime: Sendable {
        var client: MQTTClient
        var tasks: [Task<Void, Never>]
        var input: AsyncStream<ConnectionInput>.Continuation
    }

    init(index: Int, devices: [SimulatedDevice]) {
        self.index = index
        self.order = devices.map(\.id)
        self.devices = Mutex(Dictionary(uniqueKeysWithValues: devices.map { ($0.id, $0) }))
    }

    func snapshot() -> [SimulatedDevice] {
        devices.withLock { devices in order.compactMap { devices[$0] } }
    }

    func setBehaviour(_ behaviour: DeviceBehaviour, for id: String) {
        devices.withLock { $0[id]?.behaviour = behaviour }
    }

    func start(options: FleetOptions, logger: Logger, stats: StatsBox) throws {
        let (stream, input) = AsyncStream.makeStream(of: ConnectionInput.self)
        var mqttOptions = MQTTOptions(
            host: options.host, port: options.port,
            clientID: "certrot-sim-\(options.idPrefix)\(index)-\(ProcessInfo.processInfo.processIdentifier)",
            cleanSession: true, protocolVersion: .v311)
        mqttOptions.maxInflight = 1000
        let client = try MQTTClient(options: mqttOptions, logger: logger) { input.yield(.mqtt($0)) }
        let worker = Task { [self] in
            await self.run(stream: stream, client: client, options: options, logger: logger, stats: stats)
        }
        let ticker = Task {
            let started = Date()
            var online = false
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                input.yield(.tick)
                if !online, Date().timeIntervalSince(started) >= options.offlineDelay {
                    online = true
                    input.yield(.goOnline)
                }
            }
        }
        runtime.withLock { $0 = Runtime(client: client, tasks: [worker, ticker], input: input) }
        try client.start()
    }

    func stop() {
        guard
            let runtime = runtime.withLock({ value -> Runtime? in
                defer { value = nil }
                return value
            })
        else { return }
        runtime.input.finish()
        runtime.tasks.forEach { $0.cancel() }
        runtime.client.stop()
    }

    private func run(
        stream: AsyncStream<ConnectionInput>, client: MQTTClient, options: FleetOptions, logger: Logger,
        stats: StatsBox
    ) async {
        var online: Set<String> = []
        var pendingSubscriptions: [Int32: [String]] = [:]
        var offlineReleased = false

        func bringOnline(_ ids: [String]) {
            for chunk in stride(from: 0, to: ids.count, by: 50).map({ Array(ids[$0..<min($0 + 50, ids.count)]) }) {
                if let mid = try? client.subscribe(chunk.map(Topics.bundle), qos: 1) {
                    pendingSubscriptions[mid] = chunk
                }
            }
        }
        func publishInventory(_ id: String) {
            guard let inventory = devices.withLock({ $0[id]?.inventory }) else { return }
            do {
                try client.publish(topic: Topics.inventory(id), payload: inventory.encoded(), qos: 1, retain: true)
                stats.value.withLock { $0.inventoriesPublished += 1 }
            } catch {
                logger.warning("inventory publish failed", metadata: ["device": "\(id)", "error": "\(error)"])
            }
        }
        func send(_ ack: Ack, from id: String) {
            _ = try? client.publish(topic: Topics.ack(id), payload: ack.encoded(), qos: 1)
            stats.value.withLock { $0.acks[ack.status.rawValue, default: 0] += 1 }
        }

        for await item in stream {
            switch item {
            case .mqtt(.connected):
                online.removeAll()
                pendingSubscriptions.removeAll()
                let ids = devices.withLock { devices in
                    order.filter { offlineReleased || !(devices[$0]?.behaviour.offlineAtFirst ?? false) }
                }
                bringOnline(ids)
            case .mqtt(.subscribed(let mid, _)):
                for id in pendingSubscriptions.removeValue(forKey: mid) ?? [] {
                    online.insert(id)
                    publishInventory(id)
                }
            case .mqtt(.message(let message)):
                guard case .bundle(let id) = Topics.classify(message.topic), online.contains(id) else { continue }
                stats.value.withLock { $0.partsReceived += 1 }
                let now = Date().timeIntervalSince1970
                let reaction = devices.withLock { devices in
                    devices[id]?.receive(topic: message.topic, payload: message.payload, now: now)
                        ?? SimulatedDevice.Reaction.none
                }
                switch reaction {
                case .none:
                    break
                case .oversize(let bytes):
                    stats.value.withLock { $0.oversizeMessages += 1 }
                    logger.error(
                        "message over the device's maxMessage", metadata: ["device": "\(id)", "bytes": "\(bytes)"])
                case .ack(let ack, let republish):
                    // A keygen's CSR goes out before the bundle's ack (docs/protocol.md §11).
                    for csr in devices.withLock({ $0[id]?.takeCSRs() }) ?? [] {
                        _ = try? client.publish(topic: Topics.csr(id), payload: csr.encoded(), qos: 1)
                    }
                    send(ack, from: id)
                    if republish { publishInventory(id) }
                }
            case .tick:
                let now = Date().timeIntervalSince1970
                let stalled = devices.withLock { devices -> [(String, Ack)] in
                    var out: [(String, Ack)] = []
                    for id in order where online.contains(id) {
                        if let ack = devices[id]?.checkStalled(now: now, after: options.stallAfter) {
                            out.append((id, ack))
                        }
                    }
                    return out
                }
                for (id, ack) in stalled { send(ack, from: id) }
            case .goOnline:
                offlineReleased = true
                let late = devices.withLock { devices in
                    order.filter { devices[$0]?.behaviour.offlineAtFirst ?? false }
                }
                if !late.isEmpty { bringOnline(late) }
            case .mqtt:
                break
            }
        }
    }
}

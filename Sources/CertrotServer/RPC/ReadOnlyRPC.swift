import CertrotCore
import CertrotMQTT
import Foundation
import Logging
import Synchronization

/// JSON-RPC reads (`device.status`, `fleet.status`, `device.list`) answered beside the engine, in read transactions of their
/// own: an operator's status call does not wait behind a campaign's queue of acks and inventories. Signed
/// requests, and every other method, still go through the engine (they write, or need its campaign state).
/// A read may not yet show the effect of a mutating request sent just before it (they run on different queues).
/// The reads run on a thread of their own (``BlockingWorker``), and the snapshot's on another.
final class ReadOnlyRPC: Sendable {
    static let methods: Set<String> = ["device.status", "fleet.status", "device.list", "fleet.risk"]

    let store: any RotationStore
    /// What the handlers need of the engine's configuration (targets, known chains, keys), refreshed by the
    /// engine on every tick.
    private let context = Mutex<RPC.Context?>(nil)
    private let clock: @Sendable () -> Int64
    private let logger: Logger?
    /// A read that takes longer than this, from the request's arrival on the MQTT thread to its reply handed to
    /// the broker connection, is logged (notice) with where its time went: waiting for the reads' thread
    /// (`queued_ms`), the store (`read_ms`), handing the reply over (`publish_ms`).
    let slowRead: Duration

    /// On a shared store (PostgreSQL), `fleet.status` answers from a snapshot of its stored figures refreshed every
    /// ``snapshotInterval`` beside the requests, so that a status call costs no query while a campaign loads the
    /// database: its counts are at most that old (the drop counters are read live). Nil: computed per request
    /// (SQLite keeps its counts in a table of their own, and a read there is local).
    let snapshotInterval: Duration?
    private let fleetSnapshot = Mutex<FleetStatus.Result?>(nil)
    private let worker = BlockingWorker()
    private let snapshotWorker: BlockingWorker?

    init(
        store: any RotationStore, clock: @escaping @Sendable () -> Int64, snapshotInterval: Duration? = nil,
        logger: Logger? = nil, slowRead: Duration = .milliseconds(50)
    ) {
        self.store = store
        self.logger = logger
        self.slowRead = slowRead
        self.clock = clock
        self.snapshotInterval = snapshotInterval
        snapshotWorker = snapshotInterval.map { _ in BlockingWorker() }
    }

    /// The latest `fleet.status`, with the drop counters as they are now; nil before the first snapshot.
    func snapshot(drops: DropCounters) -> FleetStatus.Result? {
        guard var result = fleetSnapshot.withLock({ $0 }) else { return nil }
        result.dropped = drops.snapshot
        return result
    }

    /// Takes a new snapshot, if ``snapshotInterval`` is set and the engine has published its context.
    func refreshSnapshot() {
        guard snapshotInterval != nil, var context = context.withLock({ $0 }) else { return }
        context.now = clock()
        if let result = try? store.readAside({ tx in try RPC.fleetStatus(context: context, tx: tx) }) {
            fleetSnapshot.withLock { $0 = result }
        }
    }

    func update(_ context: RPC.Context) {
        self.context.withLock { $0 = context }
    }

    /// True for an unsigned request (a JSON object) naming one of ``methods``; decided from the payload alone,
    /// on the MQTT thread, before the message is queued.
    static func accepts(_ message: MQTTMessage) -> Bool {
        guard message.topic == Topics.rpc, message.payload.count <= RPC.maxRequestBytes,
            message.payload.first == UInt8(ascii: "{"),
            let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any],
            let method = object["method"] as? String
        else { return false }
        return methods.contains(method)
    }

    /// Answers a request made inside the daemon (``LocalRPC``) now, in a read transaction of its own: the JSON-RPC
    /// response, or nil when the store could not be read (or the engine has not published its context yet).
    func answer(_ request: [UInt8], origin: LocalOrigin) async -> [UInt8]? {
        let message = MQTTMessage(topic: Topics.rpc, payload: request)
        let reply = try? await worker.run { [self] in answer(message, origin: origin)?.payload }
        return reply ?? nil
    }

    /// The reply to one request, read now (on the caller's thread); nil when the store could not be read, the
    /// engine has not published its context yet, or the request wants no reply.
    private func answer(_ message: MQTTMessage, origin: LocalOrigin? = nil) -> Outbound? {
        guard var context = context.withLock({ $0 }) else { return nil }
        context.now = clock()
        context.fleetSnapshot = snapshot(drops: context.drops)
        let reply = try? store.read { tx in
            var reissue: [String] = []
            var deferred: [RPC.Deferred] = []
            return RPC.handle(
                message, context: context, tx: tx, reissue: &reissue, deferred: &deferred, local: origin
            ) { _, _, _ in nil }
        }
        return reply ?? nil
    }

    /// Answers `message` on the worker's thread, in the order requests came, and publishes the reply on `replies`:
    /// called on libmosquitto's thread, it hands the request over and returns. No task of Swift concurrency's pool
    /// comes between the request and its read.
    func submit(_ message: MQTTMessage, replies: RPCConnection) {
        let received = ContinuousClock.now
        worker.submit { [self] in
            let started = ContinuousClock.now
            let reply = answer(message)
            let read = ContinuousClock.now
            if let reply { _ = replies.publish(reply) }
            let published = ContinuousClock.now
            if published - received > slowRead { logSlow(message, received, started, read, published) }
        }
    }

    private func logSlow(
        _ message: MQTTMessage, _ received: ContinuousClock.Instant, _ started: ContinuousClock.Instant,
        _ read: ContinuousClock.Instant, _ published: ContinuousClock.Instant
    ) {
        func ms(_ d: Duration) -> String {
            String(format: "%.1f", d.inSeconds * 1000)
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(message.payload))) as? [String: Any]
        // The device as asked for (the log handler escapes what could forge a line: a device ID may hold a newline).
        let device = ((object?["params"] as? [String: Any])?["device"] as? String).map {
            String($0.prefix(DeviceID.maxBytes + 1))
        }
        logger?.notice(
            "slow status read",
            metadata: [
                "method": "\(object?["method"] ?? "?")",
                "device": "\(device ?? "-")",
                "queued_ms": "\(ms(started - received))", "read_ms": "\(ms(read - started))",
                "publish_ms": "\(ms(published - read))",
            ])
    }

    /// With ``snapshotInterval``, refreshes the `fleet.status` snapshot until cancelled, while this daemon answers
    /// requests on `replies` (a replica that does not lead answers none: it keeps no snapshot, and adds no load on
    /// the database for one).
    func refreshSnapshots(while replies: RPCConnection) async {
        guard let snapshotWorker, let snapshotInterval else { return }
        while !Task.isCancelled {
            if replies.isAnswering {
                _ = try? await snapshotWorker.run { [self] in refreshSnapshot() }
            } else {
                fleetSnapshot.withLock { $0 = nil }
            }
            try? await Task.sleep(for: snapshotInterval)
        }
    }
}

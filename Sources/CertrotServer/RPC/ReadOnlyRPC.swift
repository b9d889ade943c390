import CertrotCore
import CertrotMQTT
import Foundation
import Synchronization

/// JSON-RPC reads (`device.status`, `fleet.status`, `device.list`) answered beside the engine, in read transactions of their
/// own: an operator's status call does not wait behind a campaign's queue of acks and inventories. Signed
/// requests, and every other method, still go through the engine (they write, or need its campaign state).
/// A read may not yet show the effect of a mutating request sent just before it (they run on different queues).
final class ReadOnlyRPC: Sendable {
    static let methods: Set<String> = ["device.status", "fleet.status", "device.list", "fleet.risk"]

    let store: any RotationStore
    let inbox = Inbox<MQTTMessage>()
    /// What the handlers need of the engine's configuration (targets, known chains, keys), refreshed by the
    /// engine on every tick.
    private let context = Mutex<RPC.Context?>(nil)
    private let clock: @Sendable () -> Int64

    /// On a shared store (PostgreSQL), `fleet.status` answers from a snapshot of its stored figures refreshed every
    /// ``snapshotInterval`` beside the requests, so that a status call costs no query while a campaign loads the
    /// database: its counts are at most that old (the drop counters are read live). Nil: computed per request
    /// (SQLite keeps its counts in a table of their own, and a read there is local).
    let snapshotInterval: Duration?
    private let fleetSnapshot = Mutex<FleetStatus.Result?>(nil)

    init(store: any RotationStore, clock: @escaping @Sendable () -> Int64, snapshotInterval: Duration? = nil) {
        self.store = store
        self.clock = clock
        self.snapshotInterval = snapshotInterval
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
    func answer(_ request: [UInt8], origin: LocalOrigin) -> [UInt8]? {
        guard var context = context.withLock({ $0 }) else { return nil }
        context.now = clock()
        context.fleetSnapshot = snapshot(drops: context.drops)
        let message = MQTTMessage(topic: Topics.rpc, payload: request)
        let reply = try? store.read { tx in
            var reissue: [String] = []
            var deferred: [RPC.Deferred] = []
            return RPC.handle(
                message, context: context, tx: tx, reissue: &reissue, deferred: &deferred, local: origin
            ) { _, _, _ in nil }
        }
        return (reply ?? nil)?.payload
    }

    /// Answers requests until the inbox is finished; replies go out on `replies`. With ``snapshotInterval``, also
    /// refreshes the `fleet.status` snapshot until then.
    func run(replies: RPCConnection) async {
        let refresher = snapshotInterval.map { interval in
            Task.detached { [self] in
                while !Task.isCancelled {
                    refreshSnapshot()
                    try? await Task.sleep(for: interval)
                }
            }
        }
        defer { refresher?.cancel() }
        while let batch = await inbox.next(limit: 100) {
            guard var context = context.withLock({ $0 }) else { continue }
            for message in batch {
                context.now = clock()
                context.fleetSnapshot = snapshot(drops: context.drops)
                let reply = try? store.read { tx in
                    var reissue: [String] = []
                    var deferred: [RPC.Deferred] = []
                    return RPC.handle(message, context: context, tx: tx, reissue: &reissue, deferred: &deferred) {
                        _, _, _ in nil
                    }
                }
                if let reply = reply ?? nil { _ = replies.publish(reply) }
            }
        }
    }
}

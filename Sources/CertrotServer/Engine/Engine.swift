import CertrotCore
import CertrotMQTT
import Foundation
import Logging

/// What the engine is given: everything comes through the inbox, in order.
package enum EngineInput: Sendable {
    case mqtt(MQTTEvent)
    /// A message on an inventory topic, parsed on arrival (on the MQTT thread, not the engine's).
    case inventory(MQTTMessage, Result<Inventory, CertrotError>)
    case tick
    /// A JSON-RPC request (the request object's bytes) made inside the daemon by the HTTP API, which
    /// authenticated its caller; answered to `origin`'s call (``LocalCalls``).
    case local([UInt8], LocalOrigin)

    /// The device a device's message is from (its topic's first level, when valid): what a batch locks and reads
    /// ahead in one go.
    var device: String? {
        let message: MQTTMessage
        switch self {
        case .mqtt(.message(let m)), .inventory(let m, _): message = m
        default: return nil
        }
        switch Topics.classify(message.topic) {
        case .inventory(let device), .ack(let device), .csr(let device): return DeviceID.isValid(device) ? device : nil
        default: return nil
        }
    }

    /// What the daemon queues for an MQTT event: inventories are parsed as they arrive.
    static func from(_ event: MQTTEvent) -> EngineInput {
        guard case .message(let message) = event, !message.payload.isEmpty,
            case .inventory = Topics.classify(message.topic)
        else { return .mqtt(event) }
        return .inventory(message, Result { () throws(CertrotError) in try Inventory.parse(message.payload) })
    }

    /// A device's valid inventory is state: a newer one from the same topic replaces one still queued. An invalid
    /// one replaces nothing (it is dropped when its turn comes): garbage on a device's topic cannot hide the
    /// device's own inventory.
    @Sendable static func coalescingKey(_ input: EngineInput) -> [UInt8]? {
        guard case .inventory(let message, .success) = input else { return nil }
        return Array(message.topic.utf8)
    }

    /// What is queued when `newer` replaces a device's inventory still queued: `newer`, taken as live when the one it
    /// replaces was. A retained copy that follows a live inventory on the connection is at least as new as it (the
    /// broker keeps the newest), and the device was online: a live inventory must not lose that to the retained
    /// copy a replica gets on resubscribing (which would hide that the device is back without its bundle).
    @Sendable static func merge(replaced: EngineInput, newer: EngineInput) -> EngineInput {
        guard case .inventory(let old, _) = replaced, !old.retained, case .inventory(var message, let parsed) = newer,
            message.retained
        else { return newer }
        message.retained = false
        return .inventory(message, parsed)
    }

    /// What a queued input costs in memory, roughly: its payload and topic, and the message around them.
    @Sendable static func queuedSize(_ input: EngineInput) -> Int {
        switch input {
        case .mqtt(.message(let message)), .inventory(let message, _):
            // A parsed inventory is held beside its bytes: count those twice.
            let parsed = if case .inventory = input { message.payload.count } else { 0 }
            return message.payload.count + parsed + message.topic.utf8.count + (message.correlationData?.count ?? 0)
                + 128
        default:
            return 64
        }
    }
}

/// The rotation engine: reconciles inventories against targets, issues bundles, tracks acks. Runs on one task;
/// every batch of inputs is handled in one store transaction, and publishes happen only after it commits.
package final class Engine {
    let store: any RotationStore
    /// The kinds of credential, asked in this order: a bundle carries their ops in target order.
    let kinds: [any CredentialKind]
    let caChains: CAChainKind
    let signingKeys: SigningKeyKind
    let clientCerts: ClientCertKind
    var catalogue: ChainCatalogue { caChains.catalogue }
    var targets: [ResolvedTarget] { caChains.targets }
    var targetsByName: [String: ResolvedTarget] { caChains.targetsByName }
    var signer: SigningKey { signingKeys.current }
    /// The next signing key, installed on devices that report their keys (``SigningKeyKind``).
    var nextSigner: SigningKey? {
        get { signingKeys.next }
        set { signingKeys.next = newValue }
    }
    let policy: RotationPolicy
    let profile: DeviceProfile
    let bundleLifetime: Int64
    let clock: @Sendable () -> Int64
    let drops: DropCounters
    let logger: Logger
    let maxInflight: Int
    package var client: (any Publisher)?
    /// Seconds on a clock that only goes forward (leadership checks, catch-up windows, campaign progress).
    package var monotonic: @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
    /// JSON-RPC requests and replies travel on a connection of their own.
    var rpc: RPCConnection?
    var keyRotationThreshold = 0.95
    /// Operators' public keys (config `operators`).
    var operators: [VerificationKey] = []
    /// kid → the operator's name in the config (`operators[].name`).
    var operatorNames: [String: String] = [:]
    var observability: Observability?
    /// Read-only JSON-RPC methods answered beside the engine; it gets the engine's context on every tick.
    var reads: ReadOnlyRPC?
    /// Several replicas on one PostgreSQL (docs/scaling.md): inbound messages arrive through shared
    /// subscriptions; the leader alone runs ticks, campaigns and JSON-RPC. nil: a single daemon, always leading.
    var cluster: DaemonSettings.ClusterSettings? {
        didSet {
            role = cluster.map(ClusterRole.init)
            registry.countsMaxAge = cluster == nil ? 10 : 1
        }
    }
    var role: ClusterRole?
    var isLeader: Bool { role?.isLeader ?? true }

    /// In-memory delivery tracking (rebuilt after a restart by re-sending undelivered bundles).
    let delivery: Delivery
    var queuedPublishes: Int { delivery.queued }
    var connected = false
    var resumed = false

    // Campaigns (Campaigns.swift).
    let registry = CampaignRegistry()
    var campaigns: [String: Campaign] { registry.campaigns }
    var deferred: [RPC.Deferred] = []
    /// Campaigns from the config file, created at start unless one of the same name exists.
    var declaredCampaigns: [[String: Any]] = []
    var declaredCampaignDelay: Double = 5
    var nextExpirySweep: Int64 = 0
    var retention = RetentionPolicy()
    /// RPC reply prefix, signed reads, admitted device IDs (config `rpc`, `admission`).
    var limits = DaemonSettings.Limits()
    var nextRetentionSweep: Int64 = 0
    var connectedAt: Double?
    /// Write ops already checked against the device profile: a campaign writes the same chain to every device.
    var checkedOps = CheckedOps()
    /// Where the start's time went, logged once connected and at the first bundle part (``StartupTimes``).
    var startup: StartupTimes?
    /// Bundles still to send again after a start, takeover or reconnection, a chunk a transaction.
    var resumeBacklog: [ResumeBacklog] = []
    /// The newest audit checkpoint written or seen (seq, time); nil until the first tick after a start.
    var lastAuditCheckpoint: (seq: Int64, at: Int64)?
    /// When the audit tick next looks at the log's head (which takes the log's lock on PostgreSQL).
    var nextAuditCheck: Int64 = 0
    /// Set while batches wait for the store to come back (logged once per outage).
    var storeUnavailable = false
    /// Each campaign's state as the audit log last recorded it (``auditState``).
    var auditedCampaignStates: [String: String] = [:]

    init(
        store: any RotationStore, signer: SigningKey, targets: [ResolvedTarget], policy: RotationPolicy,
        profile: DeviceProfile,
        bundleLifetime: Int64, maxInflight: Int, clock: @escaping @Sendable () -> Int64, drops: DropCounters,
        logger: Logger, clientCerts: ClientCertSettings = ClientCertSettings()
    ) {
        self.store = store
        self.caChains = CAChainKind(targets: targets, catalogue: ChainCatalogue(logger: logger))
        self.signingKeys = SigningKeyKind(current: signer)
        self.clientCerts = ClientCertKind(settings: clientCerts, logger: logger)
        self.kinds = [caChains, signingKeys, self.clientCerts]
        self.policy = policy
        self.profile = profile
        self.bundleLifetime = bundleLifetime
        self.maxInflight = maxInflight
        self.delivery = Delivery(maxInflight: maxInflight, logger: logger)
        self.clock = clock
        self.drops = drops
        self.logger = logger
        delivery.partPublished = { [unowned self] in
            observability?.partsPublished.increment()
            if var start = startup.take() { start.partPublished(logger: logger) }  // the start's first part only
        }
    }

    // MARK: Batches

    package func handle(_ batch: [EngineInput]) async {
        if cluster != nil, batch.contains(where: { if case .tick = $0 { true } else { false } }) {
            checkLeadership()
        }
        // The store unreachable (a database restarting, this replica's sessions cut off): the batch is kept and
        // tried again, with backoff, until the store is back. Nothing is sent and no leader's decision is made
        // meanwhile; messages that arrive wait in the inbox.
        var delay = 0.25
        var waiting = handleBatch(batch)
        while !waiting.isEmpty, !Task.isCancelled {
            try? await Task.sleep(for: .seconds(delay))
            delay = min(delay * 2, 5)
            waiting = handleBatch(waiting)
        }
        // Bundles to send again (a start, a reconnection): the rest of them, a chunk a transaction, each chunk out
        // before the next is read.
        while !resumeBacklog.isEmpty, !Task.isCancelled, resumeNextChunk() { await Task.yield() }
        if isLeader, !declaredCampaigns.isEmpty, let connectedAt, monotonic() - connectedAt >= declaredCampaignDelay {
            await applyDeclaredCampaigns()
            declaredCampaigns = []
        }
        while !deferred.isEmpty {
            let requests = deferred
            deferred = []
            for request in requests { await answer(request) }
            flush()
        }
    }

    /// The inputs not handled because the store was unavailable (none when all were): try them again later.
    @discardableResult
    func handleBatch(_ batch: [EngineInput]) -> [EngineInput] {
        var outbox: [Outbound] = []
        let started = ContinuousClock.now
        do {
            try store.write { tx in
                // A follower learns of campaigns the leader created or changed before it handles their acks; the
                // leader's batch commits only while it still leads (a paused leader may have been replaced).
                if cluster != nil, !isLeader { try reloadCampaigns(tx: tx) }
                if cluster != nil, isLeader { try tx.fence() }
                try tx.prefetch(
                    devices: batch.compactMap { input in
                        if case .mqtt(.published(let mid, _)) = input { return delivery.device(mid: mid) }
                        return input.device
                    })
                for input in batch { try handle(input, tx: tx, outbox: &outbox) }
            }
            observability?.storeWrites.recordSeconds((ContinuousClock.now - started).inSeconds)
            observability?.storeWrite(ok: true)
            startup?.batchCommitted(parts: outbox.count)
            if storeUnavailable {
                storeUnavailable = false
                logger.notice("the store is available again")
            }
        } catch {
            observability?.storeWrite(ok: false, error: "\(error)")
            registry.forgetCounts()  // counts moved by the rolled-back transaction
            if let unavailable = error as? StoreUnavailable {
                self.unavailable(unavailable, keeping: batch.count)
                return batch
            }
            // Fenced off: from now on a follower, whose retries below make no leader's decision.
            if let lost = error as? LeadershipLost { fencedOff(lost) }
            // One input made the transaction fail: handle each alone so the others are not lost.
            logger.error(
                "batch failed; retrying its \(batch.count) inputs one by one",
                metadata: ["error": "\(String(reflecting: error))"])
            outbox = []
            for (index, input) in batch.enumerated() {
                var single: [Outbound] = []
                do {
                    try store.write { tx in
                        if cluster != nil, isLeader { try tx.fence() }
                        try handle(input, tx: tx, outbox: &single)
                    }
                    outbox += single
                } catch let unavailable as StoreUnavailable {
                    // What was handled goes out; the rest waits for the store.
                    self.unavailable(unavailable, keeping: batch.count - index)
                    for item in outbox { enqueue(item) }
                    flush()
                    return Array(batch[index...])
                } catch {
                    drops.count("store_error")
                    observability?.inputLost(storeError: "\(error)")
                    logger.error(
                        "input dropped: store write failed", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
        for item in outbox { enqueue(item) }
        flush()
        clientCerts.writeCRLs(store: store, now: clock())
        return []
    }

    /// The store could not be reached: logged once per outage (readiness reports it, ``Observability``).
    func unavailable(_ error: StoreUnavailable, keeping count: Int) {
        if !storeUnavailable {
            logger.error(
                "the store is unavailable; keeping the inputs and retrying",
                metadata: ["error": "\(error)", "inputs": "\(count)"])
        }
        storeUnavailable = true
    }

    func handle(_ input: EngineInput, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        switch input {
        case .tick:
            publishContext()
            if let cluster {
                try clusterTick(cluster, tx: tx, outbox: &outbox)
                // Before this tick's admissions: what it claims was admitted earlier and is up for every replica.
                try claimOutboundWork(tx: tx, outbox: &outbox)
                guard isLeader else { return }
            }
            try tick(tx: tx, outbox: &outbox)
        case .mqtt(.connected(let sessionPresent)):
            connected = true
            if connectedAt == nil { connectedAt = monotonic() }
            startup?.connected(logger: logger)
            observability?.brokerConnected(true)
            logger.info("connected to broker", metadata: ["sessionPresent": "\(sessionPresent)"])
            subscribe(inboundFilters + (role?.catchingUpUntil != nil ? [Topics.inventoryFilter] : []))
            try resumeUndelivered(
                issuedBy: cluster?.replica, resumed ? .reconnect : .restart, tx: tx, outbox: &outbox)
            resumed = true
        case .mqtt(.connectionRefused(let code)):
            logger.error("broker refused the connection", metadata: ["code": "\(code)"])
        case .mqtt(.disconnected(let code)):
            connected = false
            observability?.brokerConnected(false)
            logger.warning("disconnected from broker; libmosquitto reconnects", metadata: ["code": "\(code)"])
        case .mqtt(.subscribed(_, let granted)):
            if granted.contains(where: { $0 >= 0x80 }) {
                logger.error("broker refused a subscription", metadata: ["granted": "\(granted)"])
            }
        case .mqtt(.log(let message)):
            logger.error("broker connection: \(message)")
        case .mqtt(.published(let mid, let reason)):
            try published(mid: mid, reasonCode: reason, tx: tx)
        case .mqtt(.message(let message)):
            try route(message, tx: tx, outbox: &outbox)
        case .inventory(let message, let parsed):
            try route(message, parsed: parsed, tx: tx, outbox: &outbox)
        case .local(let payload, let origin):
            // In a cluster only the leader answers what is not a plain read (as only it takes certrot/rpc).
            if let cluster, !isLeader {
                let refusal = RPCError(
                    code: .unavailable,
                    message: "replica \(cluster.replica) does not lead the cluster; call the leader's HTTP API")
                outbox.append(RPC.localReply(.error(id: 1, refusal), call: origin.call))
                return
            }
            try request(MQTTMessage(topic: Topics.rpc, payload: payload), local: origin, tx: tx, outbox: &outbox)
        }
    }

    /// `parsed`: the inventory in `message`, when it was parsed on arrival.
    func route(
        _ message: MQTTMessage, parsed: Result<Inventory, CertrotError>? = nil, tx: any StoreTransaction,
        outbox: inout [Outbound]
    ) throws {
        switch Topics.classify(message.topic) {
        case .inventory(let device):
            guard admits(device) else { return }
            try inventory(device: device, message: message, parsed: parsed, tx: tx, outbox: &outbox)
        case .ack(let device):
            guard admits(device) else { return }
            try ack(device: device, payload: message.payload, tx: tx, outbox: &outbox)
        case .csr(let device):
            guard admits(device) else { return }
            try csr(device: device, payload: message.payload, tx: tx, outbox: &outbox)
        case .rpc:
            try request(message, local: nil, tx: tx, outbox: &outbox)
        case .bundle, nil:
            drops.count("unexpected_topic")
        }
    }

    /// A JSON-RPC request from MQTT, or made inside the daemon (`local`, the HTTP API).
    func request(_ message: MQTTMessage, local: LocalOrigin?, tx: any StoreTransaction, outbox: inout [Outbound]) throws
    {
        var reissue: [String] = []
        let reply = RPC.handle(
            message, context: rpcContext, tx: tx, reissue: &reissue, deferred: &deferred, local: local
        ) { method, params, tx in try self.campaignMethod(method, params: params, tx: tx) }
        if let reply { outbox.append(reply) }
        for id in reissue {
            try tx.lockDevice(id)
            guard let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
    }

    /// True when a message from `device` is taken: a valid ID that `admission.idPattern` admits; otherwise the
    /// drop is counted and it is false.
    func admits(_ device: String) -> Bool {
        if let problem = DeviceID.problem(device) {
            drops.count(CertrotError.Code.invalidDeviceID.rawValue)
            logger.debug("dropped message: \(problem)")
            return false
        }
        if let pattern = limits.idPattern, !CampaignSelection.glob(Array(pattern.utf8), Array(device.utf8)) {
            drops.count("device_not_admitted")
            return false
        }
        return true
    }
}

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
    var observability: Observability?
    /// Read-only JSON-RPC methods answered beside the engine; it gets the engine's context on every tick.
    var reads: ReadOnlyRPC?
    /// Several replicas on one PostgreSQL (docs/scaling.md): inbound messages arrive through shared
    /// subscriptions; the leader alone runs ticks, campaigns and JSON-RPC. nil: a single daemon, always leading.
    var cluster: DaemonSettings.ClusterSettings? {
        didSet { role = cluster.map(ClusterRole.init) }
    }
    private var role: ClusterRole?
    var isLeader: Bool { role?.isLeader ?? true }

    /// In-memory delivery tracking (rebuilt after a restart by re-sending undelivered bundles).
    let delivery: Delivery
    var queuedPublishes: Int { delivery.queued }
    private var connected = false
    private var resumed = false

    // Campaigns (Campaigns.swift).
    var campaigns: [String: Campaign] = [:]
    var buckets: [String: TokenBucket] = [:]
    /// Campaigns whose counts changed since their status was last published.
    var dirtyCampaigns: Set<String> = []
    var lastStatus: [String: (payload: [UInt8], at: Double)] = [:]
    /// Member counts per campaign and when they were counted (``memberCounts(_:tx:)``).
    var memberCountCache: [String: (counts: [Int: WaveCounts], at: Double)] = [:]
    var progress: [String: [(at: Double, done: Int)]] = [:]
    /// Campaigns resumed: members held while paused are issued their bundles on the next tick.
    var sweep: Set<String> = []
    var deferred: [RPC.Deferred] = []
    /// Campaigns from the config file, created at start unless one of the same name exists.
    var declaredCampaigns: [[String: Any]] = []
    var declaredCampaignDelay: Double = 5
    var nextExpirySweep: Int64 = 0
    var retention = RetentionPolicy()
    /// RPC reply prefix, signed reads, admitted device IDs (config `rpc`, `admission`).
    var limits = DaemonSettings.Limits()
    private var nextRetentionSweep: Int64 = 0
    private var connectedAt: Double?

    init(
        store: any RotationStore, signer: SigningKey, targets: [ResolvedTarget], policy: RotationPolicy,
        profile: DeviceProfile,
        bundleLifetime: Int64, maxInflight: Int, clock: @escaping @Sendable () -> Int64, drops: DropCounters,
        logger: Logger
    ) {
        self.store = store
        self.caChains = CAChainKind(targets: targets, catalogue: ChainCatalogue(logger: logger))
        self.signingKeys = SigningKeyKind(current: signer)
        self.kinds = [caChains, signingKeys]
        self.policy = policy
        self.profile = profile
        self.bundleLifetime = bundleLifetime
        self.maxInflight = maxInflight
        self.delivery = Delivery(maxInflight: maxInflight, logger: logger)
        self.clock = clock
        self.drops = drops
        self.logger = logger
        delivery.partPublished = { [unowned self] in observability?.partsPublished.increment() }
    }

    // MARK: Batches

    package func handle(_ batch: [EngineInput]) async {
        if cluster != nil, batch.contains(where: { if case .tick = $0 { true } else { false } }) {
            checkLeadership()
        }
        handleBatch(batch)
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

    private func handleBatch(_ batch: [EngineInput]) {
        var outbox: [Outbound] = []
        let started = ContinuousClock.now
        do {
            try store.write { tx in
                // A follower learns of campaigns the leader created or changed before it handles their acks.
                if cluster != nil, !isLeader { try reloadCampaigns(tx: tx) }
                for input in batch { try handle(input, tx: tx, outbox: &outbox) }
            }
            let elapsed = (ContinuousClock.now - started).components
            observability?.storeWrites.recordNanoseconds(
                elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
            observability?.storeWrite(ok: true)
        } catch {
            observability?.storeWrite(ok: false, error: "\(error)")
            memberCountCache = [:]  // counts moved by the rolled-back transaction
            // One input made the transaction fail: handle each alone so the others are not lost.
            logger.error(
                "batch failed; retrying its \(batch.count) inputs one by one",
                metadata: ["error": "\(String(reflecting: error))"])
            outbox = []
            for input in batch {
                var single: [Outbound] = []
                do {
                    try store.write { tx in try handle(input, tx: tx, outbox: &single) }
                    outbox += single
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
    }

    private func handle(_ input: EngineInput, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
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
            observability?.brokerConnected(true)
            logger.info("connected to broker", metadata: ["sessionPresent": "\(sessionPresent)"])
            subscribe(inboundFilters + (role?.catchingUpUntil != nil ? [Topics.inventoryFilter] : []))
            if !resumed {
                resumed = true
                try resumeUndelivered(issuedBy: cluster?.replica, tx: tx, outbox: &outbox)
            }
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
        }
    }

    /// `parsed`: the inventory in `message`, when it was parsed on arrival.
    private func route(
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
        case .rpc:
            var reissue: [String] = []
            let reply = RPC.handle(message, context: rpcContext, tx: tx, reissue: &reissue, deferred: &deferred) {
                method, params, tx in try self.campaignMethod(method, params: params, tx: tx)
            }
            if let reply { outbox.append(reply) }
            for id in reissue {
                try tx.lockDevice(id)
                guard let device = try tx.device(id) else { continue }
                try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
            }
        case .bundle, nil:
            drops.count("unexpected_topic")
        }
    }

    /// True when a message from `device` is taken: a valid ID that `admission.idPattern` admits; otherwise the
    /// drop is counted and it is false.
    private func admits(_ device: String) -> Bool {
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

    // MARK: Inventory

    private func inventory(
        device id: String, message: MQTTMessage, parsed: Result<Inventory, CertrotError>?, tx: any StoreTransaction,
        outbox: inout [Outbound]
    ) throws {
        let now = clock()
        guard !message.payload.isEmpty else {
            drops.count("empty_inventory")
            return
        }
        let inventory: Inventory
        do {
            inventory = try (parsed ?? Result { () throws(CertrotError) in try Inventory.parse(message.payload) }).get()
        } catch {
            drops.count(error.code.rawValue)
            logger.info("inventory dropped", metadata: ["device": "\(id)", "reason": "\(error.message)"])
            return
        }
        try tx.lockDevice(id)
        var device =
            try tx.device(id) ?? DeviceRecord(id: id, firstSeen: now, lastSeen: now, inventory: nil, issuedSeq: 0)
        device.lastSeen = now
        device.inventory = inventory
        if inventory.seq > device.issuedSeq {
            logger.info(
                "device reports a seq above the last issued; continuing above it",
                metadata: ["device": "\(id)", "seq": "\(inventory.seq)", "issued": "\(device.issuedSeq)"])
            device.issuedSeq = inventory.seq
        }
        try tx.saveDevice(device)

        var rotations = Dictionary(uniqueKeysWithValues: try tx.rotations(device: id).map { ($0.target, $0) })
        try joinContinuous(device: device, tx: tx)
        // What the device should hold, kind by kind: in each tag, the target of the newest campaign it was
        // admitted to, else the configured target; the next signing key if it can report keys; ….
        let world = KindContext(campaigns: campaigns, owners: try tagOwners(device: id, tx: tx), rotations: rotations)
        let desired = kinds.flatMap { $0.desired(inventory: inventory, in: world) }
        for kind in kinds { try kind.inventorySaved(device: id, inventory: inventory, tx: tx, now: now) }
        for wanted in desired {
            let (name, digest, holds) = (wanted.target, wanted.sha256, wanted.holds)
            guard var rotation = rotations[name] else {
                if !holds {
                    let rotation = Rotation(device: id, target: name, sha256: digest, now: now)
                    try save(rotation, previous: nil, tx: tx, detail: wanted.why)
                    rotations[name] = rotation
                }
                continue
            }
            let before = rotation
            if rotation.sha256 != digest {
                rotation.restart(sha256: digest, now: now)
            } else if rotation.state == .verified, !holds,
                inventory.seq >= rotation.seq ?? 0 || !(message.retained && cluster != nil)
            {
                // The device lost the credential (a factory reset — its seq back to 0 —, a manual write): rotate
                // it again. In a cluster, not for a retained inventory older than the bundle that verified it: a
                // replica catching up may handle a retained copy after another replica handled the device's newer
                // inventory, and that copy shows the chain the device held before. A device that was reset sends
                // a live inventory when it reconnects, which does restart the rotation.
                rotation.credentialLost(now: now, minInterval: rotationPolicy(for: name).retry.base)
            } else if rotation.state == .cancelled {
                // The tag is this target's again (the campaign that took it over was aborted before sending).
                rotation.restart(sha256: digest, now: now)
            }
            rotation.inventoryArrived(
                holdsTarget: holds, reportedSeq: inventory.seq, fresh: !message.retained,
                policy: rotationPolicy(for: name),
                now: now)
            if rotation != before {
                try save(rotation, previous: before, tx: tx)
                rotations[name] = rotation
            }
        }
        try issueIfIdle(device: device, rotations: Array(rotations.values), tx: tx, outbox: &outbox)
    }

    // MARK: Ack

    private func ack(device id: String, payload: [UInt8], tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        let ack: Ack
        do {
            ack = try Ack.parse(payload)
        } catch {
            drops.count(error.code.rawValue)
            logger.info("ack dropped", metadata: ["device": "\(id)", "reason": "\(error.message)"])
            return
        }
        observability?.ack(ack.status.rawValue)
        try tx.lockDevice(id)
        let matching = try tx.rotations(jti: ack.jti)
        guard let first = matching.first else {
            if let bundle = try tx.bundle(jti: ack.jti) {
                drops.count(DeviceID.same(bundle.device, id) ? "stale_ack" : "foreign_ack")
            } else {
                drops.count("unknown_jti")
            }
            logger.info("ack dropped", metadata: ["device": "\(id)", "jti": "\(ack.jti)", "status": "\(ack.status)"])
            return
        }
        guard DeviceID.same(first.device, id) else {
            drops.count("foreign_ack")
            logger.warning(
                "ack for another device's bundle dropped",
                metadata: ["topicDevice": "\(id)", "bundleDevice": "\(first.device)", "jti": "\(ack.jti)"])
            return
        }
        var resend: Set<Int> = []
        var changed = false
        for var rotation in matching {
            let before = rotation
            if case .resend(let parts) = rotation.acknowledged(
                ack, policy: rotationPolicy(for: rotation.target), now: now)
            {
                resend.formUnion(parts)
            }
            if rotation != before {
                changed = true
                try save(rotation, previous: before, tx: tx, detail: ack.reason)
            }
        }
        if !changed { drops.count("duplicate_ack") }
        if !resend.isEmpty, let bundle = try tx.bundle(jti: ack.jti) {
            let parts = try split(bundle: bundle)
            for number in resend.sorted() where number <= parts.count {
                outbox.append(Outbound(topic: Topics.bundle(id), payload: parts[number - 1], kind: .other))
            }
            logger.info(
                "re-sending parts", metadata: ["device": "\(id)", "jti": "\(ack.jti)", "parts": "\(resend.sorted())"])
        }
        // The device's next rotation, if one waits (the device record is read only then).
        let rotations = try tx.rotations(device: id)
        if !rotations.contains(where: \.isInFlight), rotations.contains(where: \.awaitsBundle),
            let device = try tx.device(id)
        {
            try issueIfIdle(device: device, rotations: rotations, tx: tx, outbox: &outbox)
        }
    }

    // MARK: Time

    private func tick(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        let due = Set(
            try tx.rotationsNeedingTick(now: now, ackTimeout: shortestAckTimeout, limit: 10_000).map {
                DeviceKey($0.device)
            })
        for id in due.sorted().map(\.id) {
            // Read again under the device's lock: another replica may have handled an ack meanwhile.
            try tx.lockDevice(id)
            var changed = false
            for var rotation in try tx.rotations(device: id) {
                let before = rotation
                let effect = rotation.tick(policy: rotationPolicy(for: rotation.target), now: now)
                if rotation != before {
                    try save(rotation, previous: before, tx: tx)
                    changed = true
                }
                // A due retry asks for a bundle; a timeout frees the device for another waiting rotation: either
                // way the device is issued what waits, below.
                if effect == .issueBundle { changed = true }
            }
            guard changed, let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
        try campaignTick(tx: tx, outbox: &outbox)
        if now >= nextRetentionSweep {
            // Bounded work per tick: what is left goes on the next sweep, a minute later.
            let deleted = try tx.prune(before: now.saturatingSubtract(retention.maxAge), limit: 5000)
            nextRetentionSweep = now.saturatingAdd(deleted >= 5000 ? 1 : 60)
        }
    }

    // MARK: Issuing

    /// Issues one bundle carrying every target the device is waiting for, unless a bundle is already out: a device
    /// has at most one bundle in flight, so seqs arrive in order.
    func issueIfIdle(
        device: DeviceRecord, rotations: [Rotation], tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws {
        guard !rotations.contains(where: \.isInFlight) else { return }
        var waiting = rotations.filter(\.awaitsBundle).sorted { $0.target < $1.target }
        guard !waiting.isEmpty else { return }
        let now = clock()
        waiting = try withoutSuperseded(waiting, device: device.id, tx: tx)
        let world = KindContext(campaigns: campaigns)
        let ops = waiting.compactMap { kinds.op(for: $0, in: world) }
        guard !ops.isEmpty, ops.count == waiting.count else {
            if ops.count != waiting.count {
                logger.error(
                    "a waiting rotation names no known target; not issuing", metadata: ["device": "\(device.id)"])
            }
            return
        }
        // Inventories are bounded to seq ≤ 2^53 − 1 (docs/protocol.md §2); a device that reported the largest seq
        // can take no later bundle, and says so in its rotation rather than wrapping or trapping.
        guard device.issuedSeq < Bounds.maxSeq else {
            try fail(
                waiting, error: "the device's seq is at its maximum (\(Bounds.maxSeq)); no later bundle exists",
                now: now, tx: tx)
            logger.error("cannot issue a bundle: device seq exhausted", metadata: ["device": "\(device.id)"])
            return
        }
        let seq = device.issuedSeq + 1
        let jti = Self.newJTI()
        let claims = BundleClaims(
            sub: device.id, jti: jti, iat: now, exp: now.saturatingAdd(bundleLifetime), seq: seq, ops: ops)
        let jws = JWS.sign(claims, with: signingKeys.signer(for: device.inventory))
        observability?.bundlesSigned.increment()
        let record = BundleRecord(
            jti: jti, device: device.id, seq: seq, iat: now, exp: claims.exp, jws: jws,
            maxMessage: device.inventory?.maxMessage ?? profile.maxMessage)
        let parts: [[UInt8]]
        do {
            parts = try split(bundle: record)
        } catch let error as CertrotError {
            try fail(waiting, error: error.message, now: now, tx: tx)
            logger.error(
                "cannot deliver a bundle to this device", metadata: ["device": "\(device.id)", "error": "\(error)"])
            return
        }
        var updated = device
        updated.issuedSeq = seq
        try tx.saveDevice(updated)
        try tx.insertBundle(record)
        for var rotation in waiting {
            let before = rotation
            rotation.issued(jti: jti, seq: seq, now: now)
            rotation.issuedBy = cluster?.replica
            try save(rotation, previous: before, tx: tx, detail: "bundle issued, \(parts.count) part(s)")
        }
        outbox += parts.map { Outbound(topic: Topics.bundle(device.id), payload: $0, kind: .part(jti: jti)) }
        logger.info(
            "bundle issued",
            metadata: ["device": "\(device.id)", "jti": "\(jti)", "seq": "\(seq)", "parts": "\(parts.count)"])
    }

    /// Rotations that no bundle can serve: `failed`, with no retry.
    private func fail(_ rotations: [Rotation], error: String, now: Int64, tx: any StoreTransaction) throws {
        for var rotation in rotations {
            let before = rotation
            rotation.cannotBeServed(error: error, now: now)
            try save(rotation, previous: before, tx: tx)
        }
    }

    func split(bundle: BundleRecord) throws -> [[UInt8]] {
        try Parts.split(
            jws: bundle.jws, jti: bundle.jti, topic: Topics.bundle(bundle.device), maxMessage: bundle.maxMessage)
    }

    /// After a restart (or, in a cluster, for a replica found dead): bundles issued but perhaps never handed to
    /// the broker are sent again, same jti and seq, with the ack timer started afresh. A bundle that would expire
    /// before an ack could come back is replaced by a new one instead (a device rejects an expired bundle, and a
    /// rejection is final). `issuedBy`: only that replica's bundles (nil: all).
    private func resumeUndelivered(issuedBy replica: String?, tx: any StoreTransaction, outbox: inout [Outbound]) throws
    {
        let now = clock()
        var resent: Set<String> = []
        var reissue: Set<DeviceKey> = []
        for candidate in try tx.rotationsAwaitingDelivery(issuedBy: replica) {
            try tx.lockDevice(candidate.device)
            guard
                var rotation = try tx.rotations(device: candidate.device).first(where: { $0.target == candidate.target }
                ),
                rotation.state == .pending, let jti = rotation.jti, jti == candidate.jti,
                let bundle = try tx.bundle(jti: jti)
            else { continue }
            let before = rotation
            if bundle.exp <= now + policy.ackTimeout {
                rotation.abandonBundle(now: now)
                try save(
                    rotation, previous: before, tx: tx, detail: "bundle \(jti) near expiry after a restart; re-issuing")
                reissue.insert(DeviceKey(rotation.device))
                continue
            }
            rotation.issuedAt = now
            rotation.issuedBy = cluster?.replica
            try tx.saveRotation(rotation)
            guard resent.insert(jti).inserted else { continue }
            outbox += try split(bundle: bundle).map {
                Outbound(topic: Topics.bundle(bundle.device), payload: $0, kind: .part(jti: jti))
            }
        }
        for id in reissue.sorted().map(\.id) {
            guard let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
        if !resent.isEmpty || !reissue.isEmpty {
            logger.info(
                replica == cluster?.replica
                    ? "resuming bundles issued before the restart" : "taking over bundles of replica \(replica ?? "")",
                metadata: ["resent": "\(resent.count)", "reissued": "\(reissue.count)"])
        }
    }

    // MARK: Cluster

    /// Inbound subscriptions: shared among the replicas of a cluster, each message to one of them.
    private var inboundFilters: [String] {
        role?.inboundFilters ?? [Topics.inventoryFilter, Topics.ackFilter]
    }

    private func subscribe(_ filters: [String]) {
        guard connected else { return }
        do {
            try client?.subscribe(filters, qos: 1)
        } catch {
            logger.error("subscribe failed", metadata: ["error": "\(error)", "filters": "\(filters)"])
        }
    }

    private func unsubscribe(_ filters: [String]) {
        guard connected else { return }
        do {
            try client?.unsubscribe(filters)
        } catch {
            logger.error("unsubscribe failed", metadata: ["error": "\(error)", "filters": "\(filters)"])
        }
    }

    /// Once a second: this replica is alive (in a transaction of its own, so that a long batch cannot make it
    /// look dead), and is it the leader? (A session-level lock in PostgreSQL; free when its holder dies.)
    private func checkLeadership() {
        guard let cluster, role?.leadershipCheckDue(now: monotonic()) == true else { return }
        do {
            try store.write { tx in try tx.heartbeat(replica: cluster.replica, at: clock()) }
        } catch {
            logger.error("heartbeat failed", metadata: ["error": "\(String(reflecting: error))"])
        }
        let leading = (try? store.holdLeadership()) ?? false
        guard let change = role?.leadership(leading) else { return }
        observability?.leader(leading)
        switch change {
        case .leading:
            logger.notice("this replica leads the cluster", metadata: ["replica": "\(cluster.replica)"])
            rpc?.answer(true)
        case .following:
            logger.notice("this replica follows", metadata: ["replica": "\(cluster.replica)"])
            rpc?.answer(false)
        }
    }

    /// The leader takes over from replicas that stopped (their undelivered
    /// bundles), and after taking the leadership or a replica's death catches up with retained inventories: a
    /// broker delivers no retained message through a shared subscription (mosquitto does, others do not), and
    /// a dead replica's unhandled messages are gone with its clean session.
    private func clusterTick(
        _ cluster: DaemonSettings.ClusterSettings, tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws {
        let now = clock()
        guard isLeader else { return }
        var catchUp = false
        if role?.takeOver() == true {
            try reloadCampaigns(tx: tx)
            catchUp = true
        }
        if role?.staleCheckDue(now: now) == true {
            for replica in try tx.replicas(seenBefore: now - cluster.deadAfter) where replica != cluster.replica {
                logger.warning(
                    "replica stopped reporting; taking over its undelivered bundles",
                    metadata: ["replica": "\(replica)"])
                try resumeUndelivered(issuedBy: replica, tx: tx, outbox: &outbox)
                try tx.forgetReplica(replica)
                catchUp = true
            }
        }
        switch role?.catchUp(now: monotonic(), triggered: catchUp) {
        case .subscribe: subscribe([Topics.inventoryFilter])
        case .unsubscribe: unsubscribe([Topics.inventoryFilter])
        case nil: break
        }
    }

    /// In a cluster every replica signs and sends bundles: the leader admits campaign members (their rotations
    /// then await a bundle), and each replica claims a share of the awaiting rotations on every tick, as many as
    /// its own outbound queue has room for (the admission back-pressure of one node, per replica).
    private func claimOutboundWork(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let room = min(100, max(0, 2 * maxInflight - queuedPublishes - outbox.count))
        guard room > 0 else { return }
        let holding = campaigns.values.filter { $0.state == .paused || $0.state == .scheduled }.map(
            \.rotationTargetPrefix)
        for id in try tx.claimAwaitingBundle(limit: room, holding: holding.sorted()) {
            guard let device = try tx.device(id) else { continue }
            try issueIfIdle(device: device, rotations: try tx.rotations(device: id), tx: tx, outbox: &outbox)
        }
    }

    /// A follower's view of the campaigns the leader runs.
    private func reloadCampaigns(tx: any StoreTransaction) throws {
        for campaign in try tx.campaigns() where campaigns[campaign.id] != campaign { remember(campaign) }
    }

    static func newJTI() -> String {
        var generator = SystemRandomNumberGenerator()
        return Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    // MARK: Delivery tracking

    private func published(mid: Int32, reasonCode: Int32, tx: any StoreTransaction) throws {
        guard let jti = delivery.published(mid: mid, reasonCode: reasonCode) else { return }
        let now = clock()
        // Under the device's lock, read again: another replica may be recording the device's ack right now.
        let unlocked = try tx.rotations(jti: jti)
        guard let device = unlocked.first?.device else { return }
        try tx.lockDevice(device)
        for var rotation in store.isShared ? try tx.rotations(jti: jti) : unlocked {
            let before = rotation
            rotation.delivered(now: now)
            if rotation != before { try save(rotation, previous: before, tx: tx) }
        }
    }

    func enqueue(_ item: Outbound) {
        delivery.enqueue(item)
    }

    /// Publishes what the delivery window lets out now; replies on the RPC connection when there is one.
    func flush() {
        guard let client else { return }
        delivery.flush(client: client, replies: rpc.map { rpc in { rpc.publish($0) } })
    }

    // MARK: Persistence helpers

    func save(_ rotation: Rotation, previous: Rotation?, tx: any StoreTransaction, detail: String? = nil) throws {
        try tx.saveRotation(rotation)
        // A rotation started over (after it settled, or for a new digest) is what can grow one device's history
        // and bundles without bound (a device flapping its credential): keep that device to the retention bounds
        // then. Everything else grows once per rotation and goes with age (the sweep in `tick`).
        if let previous, previous.sha256 != rotation.sha256 || (previous.isSettled && !rotation.isSettled) {
            try tx.prune(device: rotation.device, keepHistory: retention.history, keepBundles: retention.bundles)
        }
        if previous?.state != rotation.state || previous?.jti != rotation.jti {
            try memberChanged(rotation, tx: tx)
        }
        guard previous?.state != rotation.state || previous?.jti != rotation.jti else { return }
        if previous?.state != rotation.state {
            observability?.transition(target: rotation.target.description, to: rotation.state.rawValue)
            if rotation.state == .applied, let sent = rotation.sentAt, let applied = rotation.appliedAt {
                observability?.latency("sent_to_applied", seconds: applied - sent)
            }
            if rotation.state == .verified, let applied = rotation.appliedAt, let verified = rotation.verifiedAt {
                observability?.latency("applied_to_verified", seconds: verified - applied)
            }
        }
        try tx.appendHistory(
            device: rotation.device,
            entry: HistoryEntry(
                at: rotation.updatedAt, target: rotation.target.description, state: rotation.state.rawValue,
                jti: rotation.jti,
                detail: detail ?? rotation.lastError))
        logger.info(
            "rotation \(previous?.state.rawValue ?? "new") → \(rotation.state.rawValue)",
            metadata: [
                "device": "\(rotation.device)", "target": "\(rotation.target)", "jti": "\(rotation.jti ?? "-")",
                "attempts": "\(rotation.attempts)",
            ])
    }

    /// Hands the read-only RPC handler what it needs of the engine's state.
    func publishContext() {
        reads?.update(rpcContext)
    }

    var rpcContext: RPC.Context {
        RPC.Context(
            targets: targets, catalogue: catalogue.known.mapValues { ($0.name, $0.notAfter) }, drops: drops,
            logger: logger,
            signerKid: signer.kid,
            nextKid: nextSigner?.kid, keyRotationThreshold: keyRotationThreshold, operators: operators, now: clock(),
            renewal: catalogue.renewal.mapValues { RenewalInfo(before: $0.before, hasSuccessor: $0.successor != nil) },
            replyPrefix: limits.replyPrefix, signedReads: limits.signedReads, campaignIDs: Set(campaigns.keys))
    }
}

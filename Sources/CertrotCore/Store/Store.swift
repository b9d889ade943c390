/// What the daemon keeps about a device.
public struct DeviceRecord: Sendable, Equatable {
    public var id: String
    public var firstSeen: Int64
    public var lastSeen: Int64
    /// The last valid inventory, canonical JSON.
    public var inventory: Inventory?
    /// Highest bundle seq ever issued to the device (or reported by it, if higher).
    public var issuedSeq: Int64

    public init(id: String, firstSeen: Int64, lastSeen: Int64, inventory: Inventory?, issuedSeq: Int64) {
        self.id = id
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.inventory = inventory
        self.issuedSeq = issuedSeq
    }
}

/// A signed bundle, kept so that parts can be re-sent and so that no seq is ever reused.
public struct BundleRecord: Sendable, Equatable {
    public var jti: String
    public var device: String
    public var seq: Int64
    public var iat: Int64
    public var exp: Int64
    /// The signed bundle as stored: a JWS (§3), or for a compact bundle (§12) `cose:` and the COSE_Sign1 in
    /// base64url (a JWS never holds a `:`), in the same column.
    public var jws: String
    /// The `maxMessage` the parts were cut for: re-sent parts are cut the same way, so part numbers stay valid.
    public var maxMessage: Int

    public init(jti: String, device: String, seq: Int64, iat: Int64, exp: Int64, jws: String, maxMessage: Int) {
        self.jti = jti
        self.device = device
        self.seq = seq
        self.iat = iat
        self.exp = exp
        self.jws = jws
        self.maxMessage = maxMessage
    }

    static let compactPrefix = "cose:"

    /// What ``jws`` stores for a compact bundle.
    public static func stored(compact cose: [UInt8]) -> String { compactPrefix + Base64URL.encode(cose) }

    /// The COSE_Sign1 of a compact bundle; nil for a JWS.
    public var compact: [UInt8]? {
        guard jws.hasPrefix(Self.compactPrefix) else { return nil }
        return Base64URL.decode(String(jws.dropFirst(Self.compactPrefix.count)))
    }

    /// `cose` or `jws`.
    public var format: String { jws.hasPrefix(Self.compactPrefix) ? CompactBundle.format : "jws" }

    /// The claims, decoded from either format without checking the signature.
    public func claims() throws(CertrotError) -> BundleClaims {
        if jws.hasPrefix(Self.compactPrefix) {
            guard let cose = compact else { throw CertrotError(.invalidBundle, "a stored compact bundle is damaged") }
            return try CompactBundle.decode(cose).claims
        }
        return try JWS.decode(jws).claims
    }

    /// The part payloads for `{device}/certs`, cut for ``maxMessage``.
    public func parts(topic: String) throws(CertrotError) -> [[UInt8]] {
        if let cose = compact {
            return try CompactParts.split(cose: cose, jti: Hex.decode(jti) ?? [], topic: topic, maxMessage: maxMessage)
        }
        return try Parts.split(jws: jws, jti: jti, topic: topic, maxMessage: maxMessage)
    }
}

public struct HistoryEntry: Sendable, Equatable, Codable {
    public var at: Int64
    public var target: String
    public var state: String
    public var jti: String?
    public var detail: String?

    public init(at: Int64, target: String, state: String, jti: String?, detail: String?) {
        self.at = at
        self.target = target
        self.state = state
        self.jti = jti
        self.detail = detail
    }
}

/// A client certificate certrot issued (docs/protocol.md §11), stored before the bundle carrying it is sent.
public struct IssuedCertificate: Sendable, Equatable {
    public enum State: String, Sendable, Codable, CaseIterable {
        /// Issued and sent; the device has not been seen using it.
        case issued
        /// The device was verified using it.
        case active
        /// Superseded by a newer certificate the device was verified using: on the issuer's CRL.
        case revoked
    }

    /// The issuer's name (config `issuers`).
    public var issuer: String
    /// Lowercase hex of the serial's bytes.
    public var serial: String
    public var device: String
    /// The `clientCerts` policy it was issued under.
    public var policy: String
    public var tag: Int64
    /// The `keygen` bundle whose CSR it answers: at most one certificate per keygen.
    public var keygenJTI: String
    /// SHA-256 of `pem`, the type-1 credential written into `tag`.
    public var sha256: String
    /// Leaf, then the issuer's intermediates.
    public var pem: String
    public var notBefore: Int64
    public var notAfter: Int64
    public var issuedAt: Int64
    public var state: State
    public var revokedAt: Int64?

    public init(
        issuer: String, serial: String, device: String, policy: String, tag: Int64, keygenJTI: String,
        sha256: String, pem: String, notBefore: Int64, notAfter: Int64, issuedAt: Int64, state: State = .issued,
        revokedAt: Int64? = nil
    ) {
        self.issuer = issuer
        self.serial = serial
        self.device = device
        self.policy = policy
        self.tag = tag
        self.keygenJTI = keygenJTI
        self.sha256 = sha256
        self.pem = pem
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.issuedAt = issuedAt
        self.state = state
        self.revokedAt = revokedAt
    }
}

/// Reads and writes inside one store transaction. Implementations: SQLite (CertrotStore).
public protocol StoreTransaction {
    func device(_ id: String) throws -> DeviceRecord?
    func saveDevice(_ device: DeviceRecord) throws
    func rotations(device: String) throws -> [Rotation]
    /// Rotations whose outstanding bundle is `jti` (one bundle may carry several targets).
    func rotations(jti: String) throws -> [Rotation]
    func saveRotation(_ rotation: Rotation) throws
    func insertBundle(_ bundle: BundleRecord) throws
    func bundle(jti: String) throws -> BundleRecord?
    func appendHistory(device: String, entry: HistoryEntry) throws
    func history(device: String, limit: Int) throws -> [HistoryEntry]
    /// What a status read shows of one device (``DeviceView``), nil when it has not been seen: the answers of
    /// ``device(_:)``, ``rotations(device:)``, ``history(device:limit:)`` and, with `issued`, ``issued(device:)``
    /// together. A store whose reads are round trips asks them in one (PostgreSQL: one statement).
    func deviceView(_ id: String, historyLimit: Int, issued: Bool) throws -> DeviceView?
    /// Rotations whose retry is due or whose ack is overdue at `now`.
    func rotationsNeedingTick(now: Int64, ackTimeout: Int64, limit: Int) throws -> [Rotation]
    /// Rotations with an issued bundle whose parts may not all have reached the broker (`pending`), and with
    /// `includingSent` those the broker took but the device has not acknowledged (`sent`); only those issued by
    /// `replica` when it is given.
    func rotationsAwaitingDelivery(issuedBy replica: String?, includingSent: Bool) throws -> [Rotation]
    /// Rotation counts: target → state → count.
    func rotationCounts() throws -> [String: [String: Int]]
    func deviceCount() throws -> Int
    /// Records when the credential a device holds in a target's tag expires (nil: unknown).
    func saveExpiry(device: String, target: String, notAfter: Int64?) throws
    /// Per target, how many devices' credentials expire before each of `limits` (Unix seconds, ascending):
    /// target → cumulative counts, one per limit, then the count of devices with a known expiry.
    func expiryHistogram(limits: [Int64]) throws -> [String: [Int]]
    /// The devices that may not be back before the credential they hold in a target's tag expires: their last
    /// contact is longer ago than the time it has left (`not_after − now < now − last_seen`; an expired one
    /// always). Per target, their count by ``StrandedRisk/week(notAfter:now:)``, and the `limit` that expire first.
    func strandedRisk(now: Int64, limit: Int) throws -> StrandedRisk
    /// Records a signed operator request's `jti`; false when it was seen before (a replay). Forgets ids older
    /// than `forgetBefore` (they fall outside the accepted `iat` window anyway).
    func rememberRequest(jti: String, at: Int64, forgetBefore: Int64) throws -> Bool
    /// Devices whose last inventory lists `kid` among the keys they trust.
    func deviceCount(trustingKey kid: String) throws -> Int

    // MARK: Client certificates

    /// Stores a certificate just issued; throws if one exists for the same keygen bundle or issuer and serial.
    func insertIssued(_ certificate: IssuedCertificate) throws
    /// Updates an issued certificate's state and revocation time (by issuer and serial).
    func saveIssued(_ certificate: IssuedCertificate) throws
    func issued(keygenJTI: String) throws -> IssuedCertificate?
    /// Every certificate issued to `device`, oldest first.
    func issued(device: String) throws -> [IssuedCertificate]
    /// The revoked certificates of `issuer`, in serial order: what its CRL lists.
    func revoked(issuer: String) throws -> [IssuedCertificate]
    /// Issued certificates by issuer and state: issuer → state → count.
    func issuedCounts() throws -> [String: [String: Int]]
    /// How many certificates were issued at or after `since`, to the whole fleet (its issuance budget).
    func issuedCount(since: Int64) throws -> Int
    /// When the oldest certificate that has not expired at `now` was issued (nil: none): the audit log keeps its
    /// records from there on.
    func oldestUnexpiredIssuance(now: Int64) throws -> Int64?
    /// Deletes at most `limit` issued certificates that expired before `before` and are not `active`; returns how
    /// many went.
    func pruneIssued(expiredBefore before: Int64, limit: Int) throws -> Int
    /// The identity key learned for `device` under `attestation: learn` (candidates or pinned), nil: none yet.
    func learnedIdentity(device: String) throws -> LearnedIdentity?
    /// Records (or replaces) the device's learned identity.
    func saveLearnedIdentity(_ identity: LearnedIdentity) throws

    // MARK: Audit log

    /// The newest record of the audit log; on PostgreSQL it also takes the log's lock for the rest of the
    /// transaction, so that replicas append one after another.
    func lastAuditRecord() throws -> AuditRecord?
    /// Appends a record (its seq one above the newest; the store refuses a seq already there).
    func appendAudit(_ record: AuditRecord) throws
    /// Records in seq order after `after` (exclusive), at most `limit`; only those at or after `since`, and
    /// only `device`'s, when given.
    func auditRecords(after: Int64, limit: Int, since: Int64?, device: String?) throws -> [AuditRecord]
    /// Where the log may be cut: the newest checkpoint made before `before` among the `within` records after the
    /// log's first, the first itself excluded (nil: none).
    func auditPruneAnchor(before: Int64, within: Int) throws -> AuditRecord?
    /// Deletes every record before `seq`; returns how many went.
    func deleteAudit(before seq: Int64) throws -> Int

    // MARK: Retention

    /// Keeps the newest `keepHistory` history entries of `device`, and its newest `keepBundles` bundles besides
    /// those a rotation still refers to (``RetentionPolicy``).
    func prune(device: String, keepHistory: Int, keepBundles: Int) throws
    /// Deletes those of the oldest `limit` history entries (in the order they were written, which follows the
    /// clock) that are from before `before`, and at most `limit` bundles that expired before `before` and that no
    /// rotation refers to. Returns how many rows went: called again until it returns less than it may.
    func prune(before: Int64, limit: Int) throws -> Int

    // MARK: Campaigns

    /// Devices in ID order after `after` (exclusive), at most `limit`.
    func devices(after: String?, limit: Int) throws -> [DeviceRecord]
    func saveCampaign(_ campaign: Campaign) throws
    /// Every campaign, oldest first.
    func campaigns() throws -> [Campaign]
    /// Inserts or updates a member.
    func saveMember(_ member: CampaignMember) throws
    func member(campaign: String, device: String) throws -> CampaignMember?
    /// The campaigns a device belongs to.
    func memberships(device: String) throws -> [CampaignMember]
    /// Members in device order, optionally only of one wave range or state.
    func members(
        campaign: String, maxWave: Int?, state: MemberState?, after: String?, limit: Int
    ) throws -> [CampaignMember]
    /// wave → counts.
    func memberCounts(campaign: String) throws -> [Int: WaveCounts]

    // MARK: Several replicas (docs/scaling.md)

    /// Holds `device` for the rest of this write transaction: replicas sharing a database handle one device's
    /// messages one at a time. A no-op where one process is the only writer (SQLite). PostgreSQL pipelines it:
    /// the call may return before the lock is held, but every later read of the transaction returns only once it
    /// is (statements run in order), so what the transaction reads of the device no other writer can change.
    func lockDevice(_ device: String) throws
    /// Locks these devices (as ``lockDevice(_:)`` does, all at once, in one order) for the rest of this write
    /// transaction, and may read their records, rotations and campaign memberships ahead, so that the reads of
    /// them that follow cost no round trip: rows of a device this transaction holds locked change only by this
    /// transaction's own writes. A no-op where one process is the only writer (SQLite).
    func prefetch(devices: [String]) throws
    /// Claims devices with a rotation awaiting its bundle, for this replica to issue: outbound work shared by
    /// replicas. At most `limit` rotations, oldest change first, none whose target starts with one of `holding`
    /// (a paused campaign's rotations wait). On PostgreSQL the rotations are taken `FOR UPDATE SKIP LOCKED` and
    /// each device's lock (``lockDevice(_:)``) is tried, not waited for: a device another replica is issuing or
    /// handling is skipped, and a returned device is held until this transaction ends. Write transactions only.
    func claimAwaitingBundle(limit: Int, holding: [String]) throws -> [String]
    /// Makes this write transaction a leader's: it commits only if this process still holds the cluster's
    /// leadership as it took it, and fails with ``LeadershipLost`` (nothing written) once another process has
    /// taken it since — a replica that paused or lost its database session must not act on a leadership it no
    /// longer has. Every leader-only write runs in such a transaction. A no-op where one process owns the store.
    func fence() throws
    /// Records that `replica` is alive at `at`.
    func heartbeat(replica: String, at: Int64) throws
    /// Replicas last seen before `before`.
    func replicas(seenBefore before: Int64) throws -> [String]
    func forgetReplica(_ replica: String) throws
}

extension StoreTransaction {
    public func deviceView(_ id: String, historyLimit: Int, issued: Bool) throws -> DeviceView? {
        try deviceViewOneByOne(id, historyLimit: historyLimit, issued: issued)
    }

    /// ``deviceView(_:historyLimit:issued:)`` from its four reads, one after the other.
    public func deviceViewOneByOne(_ id: String, historyLimit: Int, issued: Bool) throws -> DeviceView? {
        guard let record = try device(id) else { return nil }
        return DeviceView(
            record: record, rotations: try rotations(device: id), history: try history(device: id, limit: historyLimit),
            issued: issued ? try self.issued(device: id) : [])
    }
}

/// One device as `device.status` shows it: its record, its rotations in target order, its newest history entries
/// (oldest first) and the certificates issued to it (oldest first; empty when not asked for).
public struct DeviceView: Sendable, Equatable {
    public var record: DeviceRecord
    public var rotations: [Rotation]
    public var history: [HistoryEntry]
    public var issued: [IssuedCertificate]

    public init(record: DeviceRecord, rotations: [Rotation], history: [HistoryEntry], issued: [IssuedCertificate]) {
        self.record = record
        self.rotations = rotations
        self.history = history
        self.issued = issued
    }
}

/// A leader's transaction (``StoreTransaction/fence()``) found that this process no longer holds the
/// leadership it acted on: another replica took it since. Nothing the transaction wrote is kept.
public struct LeadershipLost: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The store could not be reached: its connection failed or could not be opened (a database restarting, a
/// terminated session, a network partition). The transaction did not commit (or, if the connection broke during
/// COMMIT, may have); nothing about the inputs was wrong, and the daemon keeps them and tries again.
public struct StoreUnavailable: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A transactional store. `write` runs `body` in one transaction and commits it before returning: what the
/// daemon acknowledges onward (publishes, replies) happens only after that.
public protocol RotationStore: Sendable {
    func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    /// A read for work in the background (the `fleet.status` snapshot, a metrics scrape) that must not hold up
    /// the reads operators wait for: on PostgreSQL it has a connection of its own. Elsewhere, ``read(_:)``.
    func readAside<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    /// Whether this process is the cluster's leader (takes the leadership when it is free, keeps it while its
    /// database session lives). Always true for a store one process owns.
    func holdLeadership() throws -> Bool
    /// True when several processes can share the store (replicas).
    var isShared: Bool { get }
    /// Closes the store: another process may open it from now on.
    func close()
    /// What the store has sent its server since it opened, by name (`statements`, `round_trips`, …), for
    /// `/metrics`; empty for a store in the daemon's process.
    var traffic: [String: Int] { get }
    /// Checks the store's integrity (SQLite's `quick_check`) on a connection of its own: the seconds it took, nil
    /// when the store has no such check (PostgreSQL, whose server guards its own files). Throws, saying what to
    /// do, when the store is damaged.
    func checkIntegrity() throws -> Double?
}

extension RotationStore {
    public func checkIntegrity() throws -> Double? { nil }
    public func readAside<T>(_ body: (any StoreTransaction) throws -> T) throws -> T { try read(body) }
    public func holdLeadership() throws -> Bool { true }
    public var isShared: Bool { false }
    public func close() {}
    public var traffic: [String: Int] { [:] }

    /// What to report for `error`, a step of the start (a migration, loading campaigns) that failed on this store:
    /// when the store fails its integrity check, the check's error, which names the damage and says what to do;
    /// otherwise `error` itself.
    public func explaining(_ error: any Error) -> any Error {
        do {
            _ = try checkIntegrity()
            return error
        } catch let damage {
            return damage
        }
    }
}

/// What the store keeps of the past: nothing else deletes history or bundles, so without it one device that
/// flaps between holding and not holding its credential grows the store without bound.
public struct RetentionPolicy: Sendable, Equatable {
    /// History entries kept per device.
    public var history = 200
    /// Bundles kept per device besides those a rotation still refers to (a bundle's `seq` lives on in the device
    /// record, so no seq is reused when its bundle is gone).
    public var bundles = 20
    /// History and expired bundles older than this go, whatever their number.
    public var maxAge: Int64 = 365 * 86400
    /// Issued certificates that expired this long ago go, unless one is still a device's active identity.
    public var issuedCerts: Int64 = 90 * 86400
    /// Audit records older than this go (from a checkpoint on; never a record of a certificate not yet expired).
    public var audit: Int64 = 365 * 86400

    public init() {}
}

/// What ``StoreTransaction/strandedRisk(now:limit:)`` finds.
public struct StrandedRisk: Sendable, Equatable {
    public struct Device: Sendable, Equatable {
        public var device: String
        public var target: String
        public var notAfter: Int64
        public var lastSeen: Int64

        public init(device: String, target: String, notAfter: Int64, lastSeen: Int64) {
            self.device = device
            self.target = target
            self.notAfter = notAfter
            self.lastSeen = lastSeen
        }
    }

    /// target → week (``week(notAfter:now:)``) → devices.
    public var byWeek: [String: [Int64: Int]]
    /// The first to expire, soonest first (then by device).
    public var devices: [Device]

    public init(byWeek: [String: [Int64: Int]] = [:], devices: [Device] = []) {
        self.byWeek = byWeek
        self.devices = devices
    }

    /// 0 for a credential already expired at `now`, else k when it expires within (k−1)·7 d … k·7 d.
    public static func week(notAfter: Int64, now: Int64) -> Int64 {
        notAfter <= now ? 0 : (notAfter - now + weekSeconds - 1) / weekSeconds
    }

    public static let weekSeconds: Int64 = 7 * 86400
}

import CertrotCore
import CertrotStore
import CertrotTestSupport
import Foundation
import Synchronization
import Testing

/// The two stores certrot can run on. Each conformance test runs against both: a fresh SQLite file, and a fresh
/// database on a real PostgreSQL started for the test process.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres

    var testDescription: String { rawValue }

    /// A `store:` URL naming an empty store of this kind.
    func freshURL() throws -> String {
        switch self {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                "certrot-store-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            return "sqlite:\(dir.appendingPathComponent("certrot.db").path)"
        case .postgres:
            return try PostgresServer.shared().createDatabase()
        }
    }
}

@Suite("Store conformance (SQLite and PostgreSQL)")
struct StoreConformanceTests {
    static func device(_ id: String, seq: Int64 = 1, keys: [String]? = nil, at: Int64 = 100) -> DeviceRecord {
        let inventory = Inventory(
            seq: seq, maxMessage: 2048,
            creds: [.init(tag: 42, type: 0, sha256: String(repeating: "a", count: 64), notAfter: 5000)],
            keys: keys)
        return DeviceRecord(id: id, firstSeen: at, lastSeen: at, inventory: inventory, issuedSeq: 0)
    }

    @Test(arguments: StoreKind.allCases)
    func retention_keepsTheNewestPerDevice_andEveryBundleARotationRefersTo_andGoesByAge(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        defer { store.close() }
        func bundle(_ device: String, _ seq: Int64, exp: Int64) -> BundleRecord {
            BundleRecord(
                jti: "\(device)-\(seq)", device: device, seq: seq, iat: 0, exp: exp, jws: "x", maxMessage: 2048)
        }
        try store.write { tx throws in
            for device in ["d1", "d2"] {
                try tx.saveDevice(Self.device(device))
                for seq in Int64(1)...5 { try tx.insertBundle(bundle(device, seq, exp: seq * 100)) }
            }
            for at in Int64(1)...10 {
                for device in ["d1", "d2"] {
                    try tx.appendHistory(
                        device: device,
                        entry: HistoryEntry(at: at * 100, target: "ca", state: "pending", jti: nil, detail: "\(at)"))
                }
            }
            // d1's rotation still refers to its oldest bundle.
            var rotation = Rotation(device: "d1", target: "ca", sha256: "s", now: 0)
            rotation.issued(jti: "d1-1", seq: 1, now: 0)
            try tx.saveRotation(rotation)
            try tx.prune(device: "d1", keepHistory: 3, keepBundles: 2)
        }
        try store.read { tx throws in
            #expect(try tx.history(device: "d1", limit: 100).map(\.detail) == ["8", "9", "10"])
            #expect(try tx.history(device: "d2", limit: 100).count == 10, "other devices are untouched")
            #expect(try tx.bundle(jti: "d1-1") != nil, "a bundle a rotation refers to is kept")
            #expect(try tx.bundle(jti: "d1-2") == nil && tx.bundle(jti: "d1-3") == nil)
            #expect(try tx.bundle(jti: "d1-4") != nil && tx.bundle(jti: "d1-5") != nil)
        }
        // By age: history before 450 (looked for among the oldest entries, in the order they were written) and
        // unreferenced bundles that expired before 450, at most 3 rows of each a call.
        let first = try store.write { tx throws in try tx.prune(before: 450, limit: 3) }
        #expect(first == 6)
        let second = try store.write { tx throws in try tx.prune(before: 450, limit: 100) }
        #expect(second == 3, "d2's fourth history entry, and the last two bundles that expired before 450")
        try store.read { tx throws in
            #expect(try tx.history(device: "d2", limit: 100).map(\.detail) == ["5", "6", "7", "8", "9", "10"])
            #expect(try tx.bundle(jti: "d1-1") != nil, "still referred to")
            #expect(try tx.bundle(jti: "d2-4") == nil && tx.bundle(jti: "d2-5") != nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func devicesRoundTripAndPageInByteOrder(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        // Byte order, not a locale's: '-' (0x2D) < 'A' (0x41) < '_' (0x5F) < 'a' (0x61).
        let ids = ["dev_1", "dev-1", "Dev-2", "dev-10", "dev-2", "dev-é"]
        try store.write { tx throws in
            for id in ids { try tx.saveDevice(Self.device(id, keys: id == "dev-1" ? ["k_1", "k2"] : ["k2"])) }
        }
        try store.read { tx throws in
            #expect(try tx.deviceCount() == ids.count)
            #expect(try tx.device("dev-1") == Self.device("dev-1", keys: ["k_1", "k2"]))
            #expect(try tx.device("nope") == nil)
            let all = try tx.devices(after: nil, limit: 100).map(\.id)
            #expect(all == ids.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
            let page = try tx.devices(after: all[1], limit: 2).map(\.id)
            #expect(page == Array(all[2...3]))
            // '_' in a kid is a LIKE wildcard: it must match literally.
            #expect(try tx.deviceCount(trustingKey: "k_1") == 1)
            #expect(try tx.deviceCount(trustingKey: "kx1") == 0)
            #expect(try tx.deviceCount(trustingKey: "k2") == ids.count)
        }
        // An update keeps first_seen and replaces the rest.
        try store.write { tx throws in
            var updated = Self.device("dev-1", seq: 7, keys: ["k3"], at: 900)
            updated.issuedSeq = 12
            try tx.saveDevice(updated)
        }
        let reread = try store.read { tx in try tx.device("dev-1") }
        #expect(reread?.firstSeen == 100)
        #expect(reread?.lastSeen == 900)
        #expect(reread?.inventory?.seq == 7)
        #expect(reread?.issuedSeq == 12)
        #expect(try store.read { tx in try tx.deviceCount(trustingKey: "k_1") } == 0)
    }

    @Test(arguments: StoreKind.allCases)
    func rotationsTicksAndCounts(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        var due = Rotation(device: "d1", target: "ca", sha256: "s1", state: .failed, now: 10)
        due.nextAttemptAt = 50
        due.attempts = 2
        due.lastError = "modem said -22"
        var overdue = Rotation(device: "d2", target: "ca", sha256: "s1", state: .sent, now: 10)
        overdue.jti = "j2"
        overdue.seq = 3
        overdue.issuedAt = 10
        overdue.sentAt = 20
        var undelivered = Rotation(device: "d3", target: "ca", sha256: "s1", state: .pending, now: 10)
        undelivered.jti = "j3"
        undelivered.seq = 1
        undelivered.issuedAt = 95
        undelivered.issuedBy = "replica-1"
        var sameBundle = Rotation(device: "d3", target: "client", sha256: "s2", state: .pending, now: 10)
        sameBundle.jti = "j3"
        sameBundle.seq = 1
        sameBundle.issuedAt = 95
        var verified = Rotation(device: "d4", target: "ca", sha256: "s1", state: .verified, now: 10)
        verified.verifiedAt = 30
        verified.resends = 1
        try store.write { tx throws in
            for r in [due, overdue, undelivered, sameBundle, verified] { try tx.saveRotation(r) }
        }
        try store.read { tx throws in
            #expect(try tx.rotations(device: "d3") == [undelivered, sameBundle])
            #expect(try Set(tx.rotations(jti: "j3").map(\.target)) == ["ca", "client"])
            #expect(try tx.rotations(device: "d1") == [due])
            // At 100 with a 60 s ack timeout: d1's retry is due, d2 (sent at 20) is overdue, d3 (issued at 95) not.
            let needing = try tx.rotationsNeedingTick(now: 100, ackTimeout: 60, limit: 10)
            #expect(Set(needing.map(\.device)) == ["d1", "d2"])
            #expect(try tx.rotationsNeedingTick(now: 100, ackTimeout: 60, limit: 1).count == 1)
            #expect(try tx.rotationsNeedingTick(now: 40, ackTimeout: 60, limit: 10).isEmpty)
            #expect(
                try Set(tx.rotationsAwaitingDelivery(issuedBy: nil, includingSent: false).map(\.target)) == [
                    "ca", "client",
                ])
            #expect(try tx.rotationsAwaitingDelivery(issuedBy: "replica-1", includingSent: false) == [undelivered])
            #expect(try tx.rotationsAwaitingDelivery(issuedBy: "replica-2", includingSent: false).isEmpty)
            // With the sent ones: d2's bundle reached the broker and awaits its ack.
            #expect(
                try Set(tx.rotationsAwaitingDelivery(issuedBy: nil, includingSent: true).map(\.device)) == ["d2", "d3"])
            #expect(try tx.rotationsAwaitingDelivery(issuedBy: "replica-1", includingSent: true) == [undelivered])
            #expect(
                try tx.rotationCounts() == [
                    "ca": ["failed": 1, "sent": 1, "pending": 1, "verified": 1], "client": ["pending": 1],
                ])
        }
        // Saving again replaces the row.
        due.state = .verified
        due.nextAttemptAt = nil
        try store.write { tx in try tx.saveRotation(due) }
        #expect(try store.read { tx in try tx.rotations(device: "d1") } == [due])
        // The counts follow: a state change moves one rotation, saving it unchanged moves none, a new one adds.
        try store.write { tx throws in
            try tx.saveRotation(due)
            try tx.saveRotation(Rotation(device: "d5", target: "ca", sha256: "s1", state: .pending, now: 10))
        }
        #expect(
            try store.read { tx in try tx.rotationCounts() } == [
                "ca": ["sent": 1, "pending": 2, "verified": 2], "client": ["pending": 1],
            ])
    }

    @Test(arguments: StoreKind.allCases)
    func bundlesNeverReuseASeqAndAFailedWriteLeavesNothing(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        let bundle = BundleRecord(jti: "j1", device: "d1", seq: 1, iat: 10, exp: 20, jws: "a.b.c", maxMessage: 2048)
        try store.write { tx in try tx.insertBundle(bundle) }
        #expect(try store.read { tx in try tx.bundle(jti: "j1") } == bundle)
        #expect(try store.read { tx in try tx.bundle(jti: "j2") } == nil)
        // The same (device, seq) again is refused, and everything else the transaction wrote is rolled back.
        #expect(throws: (any Error).self) {
            try store.write { tx throws in
                try tx.saveDevice(Self.device("d1"))
                try tx.insertBundle(
                    BundleRecord(jti: "j2", device: "d1", seq: 1, iat: 11, exp: 21, jws: "x.y.z", maxMessage: 1024))
            }
        }
        try store.read { tx throws in
            #expect(try tx.device("d1") == nil)
            #expect(try tx.bundle(jti: "j2") == nil)
        }
        // A body that throws rolls back too, and the store stays usable.
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try store.write { tx throws in
                try tx.saveDevice(Self.device("d2"))
                throw Abort()
            }
        }
        try store.write { tx in
            try tx.insertBundle(
                BundleRecord(jti: "j2", device: "d1", seq: 2, iat: 11, exp: 21, jws: "x.y.z", maxMessage: 1024))
        }
        try store.read { tx throws in
            #expect(try tx.device("d2") == nil)
            #expect(try tx.bundle(jti: "j2")?.seq == 2)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func historyRequestsAndExpiry(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        try store.write { tx throws in
            for at in Int64(1)...5 {
                try tx.appendHistory(
                    device: "d1",
                    entry: HistoryEntry(at: at, target: "ca", state: "s\(at)", jti: at == 3 ? "j" : nil, detail: nil))
            }
            try tx.appendHistory(
                device: "d2", entry: HistoryEntry(at: 9, target: "ca", state: "x", jti: nil, detail: "why"))
        }
        try store.read { tx throws in
            #expect(try tx.history(device: "d1", limit: 3).map(\.state) == ["s3", "s4", "s5"])
            #expect(try tx.history(device: "d1", limit: 3).first?.jti == "j")
            #expect(
                try tx.history(device: "d2", limit: 10) == [
                    HistoryEntry(at: 9, target: "ca", state: "x", jti: nil, detail: "why")
                ])
        }
        // Operator request ids: a replay is refused; old ids are forgotten.
        try store.write { tx throws in
            #expect(try tx.rememberRequest(jti: "r1", at: 100, forgetBefore: 0))
            #expect(try !tx.rememberRequest(jti: "r1", at: 101, forgetBefore: 0))
            #expect(try tx.rememberRequest(jti: "r2", at: 200, forgetBefore: 150))
            #expect(try tx.rememberRequest(jti: "r1", at: 201, forgetBefore: 150))
        }
        // Expiry: upsert, unknown (nil) expiries not counted, cumulative counts per limit then the total known.
        try store.write { tx throws in
            try tx.saveExpiry(device: "d1", target: "ca", notAfter: 10)
            try tx.saveExpiry(device: "d2", target: "ca", notAfter: 25)
            try tx.saveExpiry(device: "d3", target: "ca", notAfter: nil)
            try tx.saveExpiry(device: "d4", target: "ca", notAfter: 1000)
            try tx.saveExpiry(device: "d1", target: "client", notAfter: 5)
            try tx.saveExpiry(device: "d4", target: "ca", notAfter: 30)
            try tx.saveExpiry(device: "d1", target: "unknown-only", notAfter: nil)
        }
        #expect(
            try store.read { tx in try tx.expiryHistogram(limits: [20, 28, 100]) } == [
                "ca": [1, 2, 3, 3], "client": [1, 1, 1, 1],
            ])
    }

    /// Stranded risk: a device whose last contact is longer ago than the time its credential has left, by week
    /// left; an expired credential always; a device seen recently enough, or with an unknown expiry, never.
    /// `deviceView` is the four reads it stands for, in a read transaction (PostgreSQL sends them together) and in a
    /// write transaction with rows it has not sent yet (read one by one, the kept rows laid over).
    @Test(arguments: StoreKind.allCases)
    func deviceView_isItsFourReads_inAReadAndInAWriteWithKeptRows(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        defer { store.close() }
        func parts(_ tx: any StoreTransaction, _ id: String, issued: Bool) throws -> DeviceView? {
            try tx.device(id).map { record in
                DeviceView(
                    record: record, rotations: try tx.rotations(device: id),
                    history: try tx.history(device: id, limit: 3),
                    issued: issued ? try tx.issued(device: id) : [])
            }
        }
        try store.write { tx throws in
            try tx.saveDevice(Self.device("d1"))
            for target in ["tls", "ca"] {
                try tx.saveRotation(Rotation(device: "d1", target: .init(target), sha256: target, now: 5))
            }
            for at in Int64(1)...5 {
                try tx.appendHistory(
                    device: "d1", entry: HistoryEntry(at: at, target: "ca", state: "pending", jti: nil, detail: "\(at)")
                )
            }
            try tx.insertIssued(
                IssuedCertificate(
                    issuer: "device-ca", serial: "01", device: "d1", policy: "identity", tag: 7, keygenJTI: "k1",
                    sha256: String(repeating: "b", count: 64), pem: "PEM", notBefore: 0, notAfter: 10, issuedAt: 1))
        }
        try store.read { tx throws in
            let view = try #require(try tx.deviceView("d1", historyLimit: 3, issued: true))
            #expect(view.rotations.map(\.target.description) == ["ca", "tls"], "target order")
            #expect(view.history.map(\.at) == [3, 4, 5], "the newest, oldest first")
            #expect(view.issued.map(\.serial) == ["01"])
            #expect(view == (try parts(tx, "d1", issued: true)))
            #expect(try tx.deviceView("d1", historyLimit: 3, issued: false)?.issued == [])
            #expect(try tx.deviceView("nobody", historyLimit: 3, issued: true) == nil)
        }
        try store.write { tx throws in
            try tx.saveDevice(Self.device("d1", seq: 9))
            try tx.saveRotation(Rotation(device: "d1", target: "ca", sha256: "new", now: 6))
            try tx.saveDevice(Self.device("d2"))
            let view = try #require(try tx.deviceView("d1", historyLimit: 3, issued: true))
            #expect(view.record.inventory?.seq == 9)
            #expect(view.rotations.first { $0.target == "ca" }?.sha256 == "new")
            #expect(view == (try parts(tx, "d1", issued: true)))
            #expect(try tx.deviceView("d2", historyLimit: 3, issued: false)?.record.id == "d2")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func strandedRisk(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        let day: Int64 = 86400
        let now: Int64 = 1000 * day
        try store.write { tx throws in
            for (id, seen) in [
                ("a", now - 40 * day), ("b", now - 1 * day), ("c", now - 10 * day), ("d", now - 100 * day),
            ] {
                try tx.saveDevice(DeviceRecord(id: id, firstSeen: 0, lastSeen: seen, inventory: nil, issuedSeq: 0))
            }
            // a: gone 40 d, 20 d left: at risk, week 3.
            try tx.saveExpiry(device: "a", target: "ca", notAfter: now + 20 * day)
            try tx.saveExpiry(device: "b", target: "ca", notAfter: now + 3 * day)  // seen yesterday: not at risk
            try tx.saveExpiry(device: "c", target: "ca", notAfter: now - day)  // expired: at risk, week 0
            try tx.saveExpiry(device: "d", target: "ca", notAfter: nil)  // unknown: never
            try tx.saveExpiry(device: "d", target: "client", notAfter: now + 7 * day)  // gone 100 d, 7 d left: week 1
            try tx.saveExpiry(device: "a", target: "client", notAfter: now + 400 * day)  // 400 d left: not at risk
        }
        let risk = try store.read { tx in try tx.strandedRisk(now: now, limit: 10) }
        #expect(risk.byWeek == ["ca": [3: 1, 0: 1], "client": [1: 1]])
        #expect(risk.devices.map(\.device) == ["c", "d", "a"])
        #expect(
            risk.devices.first
                == StrandedRisk.Device(device: "c", target: "ca", notAfter: now - day, lastSeen: now - 10 * day))
        #expect(try store.read { tx in try tx.strandedRisk(now: now, limit: 1) }.devices.map(\.device) == ["c"])
    }

    @Test(arguments: StoreKind.allCases)
    func campaignsAndMembers(kind: StoreKind) throws {
        let url = try kind.freshURL()
        let store = try openStore(url: url)
        var older = Campaign(id: "cmp-b", name: "older", now: 10, targets: [], select: .all, origin: "rpc")
        let newer = Campaign(
            id: "cmp-a", name: "newer", now: 20, targets: [], select: .devices(["d1"]), origin: "config")
        try store.write { tx throws in
            try tx.saveCampaign(newer)
            try tx.saveCampaign(older)
            for (index, device) in ["d3", "d1", "d2", "d4"].enumerated() {
                try tx.saveMember(
                    CampaignMember(
                        campaign: "cmp-b", device: device, wave: index < 2 ? 0 : 1,
                        state: index == 0 ? .verified : .waiting,
                        settled: index == 0, reason: nil, updatedAt: 10))
            }
            try tx.saveMember(
                CampaignMember(
                    campaign: "cmp-a", device: "d1", wave: 0, state: .failed, settled: true,
                    reason: "bad (code -22): x", updatedAt: 20))
        }
        older.state = .paused
        older.reason = "error threshold"
        try store.write { tx throws in
            try tx.saveCampaign(older)
            try tx.saveMember(
                CampaignMember(
                    campaign: "cmp-b", device: "d2", wave: 1, state: .sent, settled: false, reason: nil, updatedAt: 30))
        }
        // Reopened: the migrations are idempotent and everything is still there.
        store.close()
        let reopened = try openStore(url: url)
        try reopened.read { tx throws in
            #expect(try tx.campaigns() == [older, newer])
            #expect(try tx.member(campaign: "cmp-a", device: "d1")?.code == -22)
            #expect(try tx.member(campaign: "cmp-a", device: "d9") == nil)
            #expect(try Set(tx.memberships(device: "d1").map(\.campaign)) == ["cmp-a", "cmp-b"])
            #expect(
                try tx.members(campaign: "cmp-b", maxWave: nil, state: nil, after: nil, limit: 10).map(\.device) == [
                    "d1", "d2", "d3", "d4",
                ])
            #expect(
                try tx.members(campaign: "cmp-b", maxWave: 0, state: nil, after: nil, limit: 10).map(\.device) == [
                    "d1", "d3",
                ])
            #expect(
                try tx.members(campaign: "cmp-b", maxWave: nil, state: .waiting, after: "d1", limit: 10).map(\.device)
                    == ["d4"])
            #expect(
                try tx.members(campaign: "cmp-b", maxWave: 1, state: nil, after: "d1", limit: 2).map(\.device) == [
                    "d2", "d3",
                ])
            let counts = try tx.memberCounts(campaign: "cmp-b")
            #expect(counts[0]?.states == [.verified: 1, .waiting: 1])
            #expect(counts[0]?.settled == 1)
            #expect(counts[1]?.states == [.sent: 1, .waiting: 1])
            #expect(counts[1]?.settled == 0)
            #expect(try tx.memberCounts(campaign: "none").isEmpty)
        }
    }
}

extension StoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func replicasHeartbeatAndAreForgotten(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        try store.write { tx throws in
            try tx.lockDevice("d1")  // re-entrant within a transaction
            try tx.lockDevice("d1")
            try tx.heartbeat(replica: "a", at: 100)
            try tx.heartbeat(replica: "b", at: 100)
            try tx.heartbeat(replica: "a", at: 200)
        }
        #expect(try store.read { tx in try tx.replicas(seenBefore: 150) } == ["b"])
        try store.write { tx in try tx.forgetReplica("b") }
        #expect(try store.read { tx in try tx.replicas(seenBefore: 1000) } == ["a"])
        #expect(store.isShared == (kind == .postgres))
        #expect(try store.holdLeadership())
    }

    /// Outbound work: devices with a rotation awaiting its bundle, oldest change first, each device once, none of a
    /// held campaign; a rotation with a bundle out (or settled) is not work.
    @Test(arguments: StoreKind.allCases)
    func awaitingBundlesAreClaimedOldestFirst_heldCampaignsWait(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        try store.write { tx throws in
            try tx.saveRotation(Rotation(device: "d2", target: "cmp-a.0", sha256: "s", state: .pending, now: 10))
            try tx.saveRotation(Rotation(device: "d2", target: "cmp-a.1", sha256: "s", state: .pending, now: 11))
            try tx.saveRotation(Rotation(device: "d1", target: "cmp-a.0", sha256: "s", state: .pending, now: 20))
            try tx.saveRotation(Rotation(device: "d3", target: "cmp-b.0", sha256: "s", state: .pending, now: 5))
            var out = Rotation(device: "d4", target: "cmp-a.0", sha256: "s", state: .pending, now: 1)
            out.jti = "j4"
            try tx.saveRotation(out)
            try tx.saveRotation(Rotation(device: "d5", target: "cmp-a.0", sha256: "s", state: .verified, now: 1))
        }
        try store.write { tx throws in
            #expect(try tx.claimAwaitingBundle(limit: 10, holding: ["cmp-b."]).sorted() == ["d1", "d2"])
            #expect(try tx.claimAwaitingBundle(limit: 10, holding: []).sorted() == ["d1", "d2", "d3"])
            #expect(try tx.claimAwaitingBundle(limit: 1, holding: []) == ["d3"])
        }
    }
}

@Suite("PostgreSQL store")
struct PostgresStoreTests {
    @Test(arguments: StoreKind.allCases)
    func issuedCertificates_oneAKeygen_revokedInSerialOrder_andAKeygenRotationDueWithoutItsCSR(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        defer { store.close() }
        func certificate(_ serial: String, _ device: String, jti: String, at: Int64) -> IssuedCertificate {
            IssuedCertificate(
                issuer: "device-ca", serial: serial, device: device, policy: "identity", tag: 16_842_754,
                keygenJTI: jti, sha256: String(repeating: String(serial.prefix(1)), count: 64), pem: "PEM \(serial)",
                notBefore: at, notAfter: at + 1000, issuedAt: at)
        }
        try store.write { tx throws in
            try tx.insertIssued(certificate("b0", "d1", jti: "k1", at: 10))
            try tx.insertIssued(certificate("a0", "d1", jti: "k2", at: 20))
            try tx.insertIssued(certificate("c0", "d2", jti: "k3", at: 30))
        }
        // A second certificate for one keygen, or a reused serial, is refused by the store itself.
        #expect(throws: (any Error).self) {
            try store.write { tx in try tx.insertIssued(certificate("d0", "d1", jti: "k1", at: 40)) }
        }
        #expect(throws: (any Error).self) {
            try store.write { tx in try tx.insertIssued(certificate("a0", "d3", jti: "k9", at: 40)) }
        }
        try store.write { tx throws in
            for var issued in try tx.issued(device: "d1") {
                issued.state = .revoked
                issued.revokedAt = 50
                try tx.saveIssued(issued)
            }
        }
        try store.read { tx throws in
            #expect(try tx.issued(device: "d1").map(\.serial) == ["b0", "a0"], "oldest first")
            #expect(try tx.issued(keygenJTI: "k3") == certificate("c0", "d2", jti: "k3", at: 30))
            #expect(try tx.issued(keygenJTI: "nope") == nil)
            #expect(try tx.revoked(issuer: "device-ca").map(\.serial) == ["a0", "b0"])
            #expect(try tx.revoked(issuer: "device-ca").allSatisfy { $0.revokedAt == 50 })
            #expect(try tx.issuedCounts() == ["device-ca": ["revoked": 2, "issued": 1]])
        }
        // A keygen applied without its CSR is due for a tick once the ack timeout has passed.
        try store.write { tx throws in
            var waiting = Rotation(
                device: "d1", target: .clientCert("identity"), sha256: Rotation.digestUnknown, state: .applied, now: 0)
            waiting.jti = "k4"
            waiting.appliedAt = 100
            try tx.saveRotation(waiting)
            #expect(try tx.rotationsNeedingTick(now: 699, ackTimeout: 600, limit: 10).isEmpty)
            #expect(try tx.rotationsNeedingTick(now: 700, ackTimeout: 600, limit: 10).map(\.jti) == ["k4"])
            #expect(try tx.rotations(device: "d1").first?.target == .clientCert("identity"))
        }
    }

    /// What the issuance budgets and retention read and delete (red-team #32, finding 3): the fleet's recent
    /// issuance, the oldest certificate not yet expired, expired certificates that are not in use, and the audit
    /// log up to a checkpoint among its first records.
    @Test(arguments: StoreKind.allCases)
    func issuanceBudgetsAndRetention_countAndDeleteTheSameRows(kind: StoreKind) throws {
        let store = try openStore(url: try kind.freshURL())
        defer { store.close() }
        let key = SigningKey.generate()
        func certificate(
            _ serial: String, issuedAt: Int64, notAfter: Int64, state: IssuedCertificate.State
        )
            -> IssuedCertificate
        {
            IssuedCertificate(
                issuer: "ca", serial: serial, device: "d1", policy: "p", tag: 1, keygenJTI: "k" + serial,
                sha256: serial, pem: "", notBefore: issuedAt, notAfter: notAfter, issuedAt: issuedAt, state: state)
        }
        try store.write { tx throws in
            try tx.insertIssued(certificate("01", issuedAt: 100, notAfter: 200, state: .revoked))
            try tx.insertIssued(certificate("02", issuedAt: 150, notAfter: 250, state: .active))
            try tx.insertIssued(certificate("03", issuedAt: 300, notAfter: 1000, state: .revoked))
            try tx.insertIssued(certificate("04", issuedAt: 400, notAfter: 1400, state: .active))
            for at in Int64(1)...12 {
                if at % 4 == 0 {
                    try tx.appendAudit(try AuditChain.checkpoint(after: try tx.lastAuditRecord(), at: at, key: key))
                } else {
                    try tx.audit(.bundleSigned, at: at, device: "d1", subject: "j\(at)", body: [:])
                }
            }
        }
        try store.read { tx throws in
            #expect(try tx.issuedCount(since: 150) == 3 && tx.issuedCount(since: 401) == 0)
            #expect(try tx.oldestUnexpiredIssuance(now: 220) == 150 && tx.oldestUnexpiredIssuance(now: 260) == 300)
            #expect(try tx.oldestUnexpiredIssuance(now: 2000) == nil)
            // Checkpoints at seq 4, 8 and 12: the newest made before 10 within 7 records of the first.
            #expect(try tx.auditPruneAnchor(before: 10, within: 7)?.seq == 8)
            #expect(try tx.auditPruneAnchor(before: 6, within: 100)?.seq == 4)
            #expect(try tx.auditPruneAnchor(before: 4, within: 100) == nil)
        }
        try store.write { tx throws in
            #expect(try tx.pruneIssued(expiredBefore: 1100, limit: 10) == 2, "01 and 03; 02 is in use")
            #expect(try tx.issued(device: "d1").map(\.serial) == ["02", "04"])
            #expect(try tx.deleteAudit(before: 8) == 7)
            #expect(try tx.auditRecords(after: 0, limit: 100, since: nil, device: nil).first?.seq == 8)
            #expect(try tx.auditPruneAnchor(before: 100, within: 100)?.seq == 12, "not the first record itself")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func theAuditLog_appendsInOrder_refusesASeqTwice_andFilters(kind: StoreKind) throws {
        let url = try kind.freshURL()
        let store = try openStore(url: url)
        defer { store.close() }
        try store.write { tx throws in
            #expect(try tx.lastAuditRecord() == nil)
            try tx.audit(.bundleSigned, at: 10, device: "d1", subject: "j1", body: ["seq": 1])
            try tx.audit(.operatorRequest, at: 20, subject: "campaign.create", body: ["result": "ok"])
            try tx.audit(.bundleSigned, at: 30, device: "d2", subject: "j2", body: ["seq": 1])
        }
        #expect(throws: (any Error).self) {
            try store.write { tx in
                try tx.appendAudit(
                    AuditRecord(seq: 2, at: 40, kind: .checkpoint, device: nil, subject: nil, body: "{}", prev: ""))
            }
        }
        try store.read { tx throws in
            let all = try tx.auditRecords(after: 0, limit: 10, since: nil, device: nil)
            #expect(all.map(\.seq) == [1, 2, 3] && all[1].prev == all[0].hash && all[2].prev == all[1].hash)
            #expect(try tx.auditRecords(after: 1, limit: 1, since: nil, device: nil).map(\.seq) == [2])
            #expect(try tx.auditRecords(after: 0, limit: 10, since: 20, device: nil).map(\.seq) == [2, 3])
            #expect(try tx.auditRecords(after: 0, limit: 10, since: nil, device: "d2").map(\.subject) == ["j2"])
            #expect(throws: Never.self) { try AuditChain.verify(all, keys: []) }
        }
        // What `certrot audit export` reads, beside the open store (read-only for SQLite).
        #expect(try AuditReader.records(storeURL: url).count == 3)
        #expect(try AuditReader.records(storeURL: url, device: "d1").map(\.subject) == ["j1"])
    }

    @Test func urlsAreCheckedBeforeConnecting() throws {
        #expect(throws: (any Error).self) { try validateStoreURL("postgres://host/db") }  // no user
        #expect(throws: (any Error).self) { try validateStoreURL("postgres://u@host") }  // no database
        #expect(throws: (any Error).self) { try validateStoreURL("postgres://u@host/db?sslmode=allow") }
        #expect(throws: (any Error).self) { try validateStoreURL("mysql://u@host/db") }
        try validateStoreURL("postgres://u:p@host:6543/db?sslmode=disable")
        let configuration = try PostgresStore.configuration(
            fromURL: "postgresql://certrot:s3cret@db.internal:6543/fleet")
        #expect(configuration.host == "db.internal")
        #expect(configuration.port == 6543)
        #expect(configuration.username == "certrot")
        #expect(configuration.password == "s3cret")
        #expect(configuration.database == "fleet")
    }

    /// One leader at a time among processes sharing a database; a leader that goes away frees the leadership.
    @Test func leadershipIsExclusive_andPassesOnWhenTheLeaderGoesAway() throws {
        let url = try PostgresServer.shared().createDatabase()
        var first: PostgresStore? = try PostgresStore(url: url)
        let second = try PostgresStore(url: url)
        #expect(try first!.holdLeadership())
        #expect(try !second.holdLeadership())
        #expect(try first!.holdLeadership())
        first = nil  // its connections close, as when a process dies
        // The server ends the session (and frees the lock) a moment after the connection closes.
        var taken = false
        for _ in 0..<50 where !taken {
            taken = try second.holdLeadership()
            if !taken { usleep(100_000) }
        }
        #expect(taken)
    }

    /// A leader whose session died (here terminated; in life a pause longer than the session timeout) and was
    /// replaced cannot commit a leader's decision when it comes back: its fenced transaction fails and writes
    /// nothing, while the new leader's commits.
    @Test func aReplacedLeadersFencedTransactionCommitsNothing() throws {
        let server = try PostgresServer.shared()
        let url = try server.createDatabase()
        let database = String(url.split(separator: "/").last!)
        let old = try PostgresStore(url: url)
        let new = try PostgresStore(url: url)
        #expect(try old.holdLeadership())
        let first = try #require(old.leadershipEpoch)
        try old.write { tx in
            try tx.fence()
            try tx.saveDevice(StoreConformanceTests.device("before"))
        }
        // The session holding the leadership lock goes away (key 0x6365_7274_726F_7402: classid, objid).
        try server.psql(
            """
            SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND classid = \(0x6365_7274) AND objid = \(0x726F_7402)
            """, database: database)
        var taken = false
        for _ in 0..<50 where !taken {
            taken = try new.holdLeadership()
            if !taken { usleep(100_000) }
        }
        #expect(taken)
        #expect(new.leadershipEpoch == first + 1)
        // The old leader has not checked its leadership since; its next leader's transaction is refused.
        #expect(throws: LeadershipLost.self) {
            try old.write { tx in
                try tx.fence()
                try tx.saveDevice(StoreConformanceTests.device("stale"))
            }
        }
        #expect(old.leadershipEpoch == nil)
        #expect(try !old.holdLeadership())
        try new.write { tx in
            try tx.fence()
            try tx.saveDevice(StoreConformanceTests.device("after"))
        }
        #expect(try new.read { tx in try tx.devices(after: nil, limit: 10).map(\.id) } == ["after", "before"])
        // A follower's transaction cannot be fenced: it holds no leadership.
        #expect(throws: LeadershipLost.self) { try old.write { tx in try tx.fence() } }
    }

    /// A replica that pauses inside a transaction (SIGSTOP, a stalled VM) holds its device locks no longer than the
    /// session timeout: the server ends the session, the other writer goes on, and the paused transaction's
    /// writes are lost with it, never half-kept.
    @Test func aTransactionIdleLongerThanTheSessionTimeoutIsEnded() throws {
        let url = try PostgresServer.shared().createDatabase()
        let paused = try PostgresStore(url: url, sessionTimeout: 1)
        let other = try PostgresStore(url: url)
        try other.write { tx in try tx.saveDevice(StoreConformanceTests.device("d1")) }
        #expect(throws: (any Error).self) {
            try paused.write { tx in
                try tx.lockDevice("d1")
                var device = try tx.device("d1")!
                sleep(3)
                device.lastSeen = 999
                try tx.saveDevice(device)
            }
        }
        let seen = try other.write { tx in
            try tx.lockDevice("d1")
            return try tx.device("d1")?.lastSeen
        }
        #expect(seen == 100)
        // The store reconnects for the next transaction.
        try paused.write { tx in try tx.saveDevice(StoreConformanceTests.device("d2")) }
        #expect(try other.read { tx in try tx.device("d2") } != nil)
    }

    /// Two writers on one device: the second waits for the first transaction (the device lock), so neither
    /// reads a state the other is about to change. The lock is sent without waiting for it (the store pipelines
    /// statements), so what shows it held is the second writer's read: it returns only after the first writer
    /// committed, and sees what that one wrote.
    @Test func aDeviceLockSerialisesTwoWriters() async throws {
        let url = try PostgresServer.shared().createDatabase()
        let a = try PostgresStore(url: url)
        let b = try PostgresStore(url: url)
        try a.write { tx in try tx.saveDevice(StoreConformanceTests.device("d1")) }
        let order = Mutex<[String]>([])
        let firstHolds = DispatchSemaphore(value: 0)
        let thread = Thread {
            try? a.write { tx in
                try tx.lockDevice("d1")
                var device = try tx.device("d1")!
                firstHolds.signal()
                device.lastSeen = 200
                try tx.saveDevice(device)
                usleep(300_000)
                order.withLock { $0.append("a done") }
            }
        }
        thread.start()
        firstHolds.wait()
        let seen = try b.write { tx in
            try tx.lockDevice("d1")
            let device = try tx.device("d1")
            order.withLock { $0.append("b read") }
            return device?.lastSeen
        }
        #expect(order.withLock { $0 } == ["a done", "b read"])
        #expect(seen == 200)
    }

    /// Two replicas claiming outbound work at once get different devices: rows another transaction claimed are
    /// skipped, and so is a device whose lock another transaction holds (it is handling that device).
    @Test func concurrentClaimsTakeDisjointDevices_andSkipALockedDevice() async throws {
        let url = try PostgresServer.shared().createDatabase()
        let a = try PostgresStore(url: url)
        let b = try PostgresStore(url: url)
        try a.write { tx in
            for index in 1...6 {
                try tx.saveRotation(
                    Rotation(device: "d\(index)", target: "cmp.0", sha256: "s", state: .pending, now: Int64(index)))
            }
        }
        let claimedByA = Mutex<[String]>([])
        let aHolds = DispatchSemaphore(value: 0)
        let bDone = DispatchSemaphore(value: 0)
        let thread = Thread {
            try? a.write { tx in
                claimedByA.withLock { $0 = (try? tx.claimAwaitingBundle(limit: 2, holding: [])) ?? [] }
                try tx.lockDevice("d5")  // handling d5's ack, say
                // The lock is pipelined: held once a read after it has returned.
                _ = try tx.device("d5")
                aHolds.signal()
                bDone.wait()
            }
        }
        thread.start()
        aHolds.wait()
        let claimedByB = try b.write { tx in try tx.claimAwaitingBundle(limit: 10, holding: []) }
        bDone.signal()
        #expect(claimedByA.withLock { $0 } == ["d1", "d2"])
        #expect(claimedByB == ["d3", "d4", "d6"])
    }

    /// A server that went away and came back: the next transaction reconnects instead of failing forever.
    @Test func reconnectsAfterTheServerDropsTheConnection() throws {
        let server = try PostgresServer.shared()
        let url = try server.createDatabase()
        let store = try openStore(url: url)
        try store.write { tx in try tx.saveDevice(StoreConformanceTests.device("d1")) }
        let database = String(url.split(separator: "/").last!)
        try server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND pid <> pg_backend_pid()"
        )
        // The first call may fail on the dropped connection; the store must recover by the second.
        _ = try? store.read { tx in try tx.deviceCount() }
        _ = try? store.write { tx in try tx.deviceCount() }
        #expect(try store.read { tx in try tx.deviceCount() } == 1)
        try store.write { tx in try tx.saveDevice(StoreConformanceTests.device("d2")) }
        #expect(try store.read { tx in try tx.deviceCount() } == 2)
    }
}

extension StoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func learnedIdentities_areRecorded_thenPinned_andSurviveAReopen(kind: StoreKind) throws {
        let url = try kind.freshURL()
        let store = try openStore(url: url)
        let uuid = (0..<16).map { UInt8($0) }
        var identity = LearnedIdentity(
            device: "d1", uuid: uuid,
            candidates: ["04" + String(repeating: "a", count: 128), "04" + String(repeating: "b", count: 128)],
            firstSeenAt: 100)
        try store.write { tx throws in
            #expect(try tx.learnedIdentity(device: "d1") == nil)
            try tx.saveLearnedIdentity(identity)
        }
        #expect(try store.read { tx in try tx.learnedIdentity(device: "d1") } == identity)
        identity.candidates = [identity.candidates[1]]
        identity.pinnedAt = 200
        try store.write { tx throws in try tx.saveLearnedIdentity(identity) }
        store.close()
        let reopened = try openStore(url: url)
        defer { reopened.close() }
        try reopened.read { tx throws in
            let read = try tx.learnedIdentity(device: "d1")
            #expect(read == identity && read?.key == identity.candidates[0])
            #expect(try tx.learnedIdentity(device: "d2") == nil)
        }
    }
}

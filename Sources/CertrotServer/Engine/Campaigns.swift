import CertrotCore
import Foundation
import Logging

/// Campaigns: creation (with the never-brick preflight), admission wave by wave at a bounded rate inside
/// maintenance windows, thresholds, pause/resume/abort, continuous joins, standing auto-renewal campaigns, and
/// retained progress. Runs on the engine's task, inside its batch transactions.
extension Engine {
    typealias KnownChain = DaemonSettings.KnownChain

    static let autoPrefix = "auto-"

    // MARK: Start

    /// Loads campaigns and creates the standing auto-renewal campaigns of targets with a successor.
    package func startCampaigns() throws {
        try store.write { tx in
            for campaign in try tx.campaigns() { remember(campaign) }
            // A standing campaign whose target lost its successor (or is gone) stops.
            for var campaign in campaigns.values where campaign.autoRenews != nil && !campaign.state.isFinal {
                guard let name = campaign.autoRenews, catalogue.renewal[name]?.successor == nil else { continue }
                try abort(&campaign, reason: "target \(name) has no successor configured any more", tx: tx)
                try store(campaign, tx: tx)
            }
            for target in targets {
                guard let renewal = catalogue.renewal[target.name], let successor = renewal.successor else { continue }
                let id =
                    Self.autoPrefix + String(Hex.sha256(Array("\(target.name)\n\(successor.sha256)".utf8)).prefix(12))
                for var old in campaigns.values
                where old.autoRenews == target.name && old.id != id && !old.state.isFinal {
                    try abort(&old, reason: "the successor of target \(target.name) changed", tx: tx)
                    try store(old, tx: tx)
                }
                guard campaigns[id] == nil else { continue }
                let now = clock()
                var campaign = Campaign(
                    id: id, name: "auto-renewal of \(target.name)", now: now,
                    targets: [
                        CampaignTarget(
                            tag: target.tag, type: target.type, strategy: .replace, pem: successor.pem, credential: nil)
                    ],
                    select: .expiringWithin(tag: target.tag, seconds: renewal.before), origin: "auto")
                campaign.sequence = nextCampaignSequence
                campaign.policy.continuous = true
                campaign.autoRenews = target.name
                try store(campaign, tx: tx)
                logger.info(
                    "auto-renewal campaign ready",
                    metadata: ["campaign": "\(id)", "target": "\(target.name)", "renewBefore": "\(renewal.before)"])
                // Devices already known and already expiring join now.
                var after: String?
                while true {
                    let page = try tx.devices(after: after, limit: 1000)
                    guard let last = page.last else { break }
                    for device in page { try joinContinuous(device: device, tx: tx) }
                    after = last.id
                }
            }
        }
    }

    /// Creates the campaigns declared in the config file, unless one of the same name exists.
    func applyDeclaredCampaigns() async {
        for params in declaredCampaigns {
            let name = params["name"] as? String ?? ""
            if campaigns.values.contains(where: { $0.name == name }) { continue }
            do {
                let campaign = try await createCampaign(params: params, origin: "config")
                logger.notice(
                    "campaign from the config file created",
                    metadata: ["campaign": "\(campaign.id)", "name": "\(name)"])
            } catch let refusal as Refusal {
                logger.error(
                    "campaign from the config file refused",
                    metadata: ["name": "\(name)", "reason": "\(refusal.message)"])
            } catch {
                logger.error(
                    "campaign from the config file failed", metadata: ["name": "\(name)", "error": "\(error)"])
            }
        }
        flush()
    }

    func remember(_ campaign: Campaign) {
        campaigns[campaign.id] = campaign
        catalogue.learn(campaign)
        if let rate = campaign.policy.rate, buckets[campaign.id]?.rate != rate {
            buckets[campaign.id] = TokenBucket(rate: rate, now: monotonic())
        }
    }

    func store(_ campaign: Campaign, tx: any StoreTransaction) throws {
        try tx.saveCampaign(campaign)
        remember(campaign)
        dirtyCampaigns.insert(campaign.id)
    }

    // MARK: Which target owns a tag

    /// The tag a rotation target writes.
    func tagKey(of target: RotationTarget) -> TagKey? {
        kinds.slot(of: target, in: KindContext(campaigns: campaigns))
    }

    /// For each tag some campaign has taken over on this device: the rotation target of the newest campaign that
    /// admitted it (and did not cancel it).
    func tagOwners(device: String, tx: any StoreTransaction) throws -> [TagKey: RotationTarget] {
        guard !campaigns.isEmpty else { return [:] }  // no membership query per inventory without campaigns
        var owners: [TagKey: (order: Campaign.Precedence, target: RotationTarget)] = [:]
        for member in try tx.memberships(device: device) where member.state != .waiting && member.state != .cancelled {
            guard let campaign = campaigns[member.campaign] else { continue }
            let order = campaign.precedence
            for index in campaign.targets.indices {
                let key = TagKey(tag: campaign.targets[index].tag, type: campaign.targets[index].type)
                if let current = owners[key], current.order >= order { continue }
                owners[key] = (order, campaign.rotationTarget(index))
            }
        }
        return owners.mapValues(\.target)
    }

    /// Drops waiting rotations that must not go out now: those of a tag another target owns (cancelled, they
    /// were superseded) and those of a paused campaign (held until it resumes).
    func withoutSuperseded(_ waiting: [Rotation], device: String, tx: any StoreTransaction) throws -> [Rotation] {
        guard waiting.contains(where: { tagKey(of: $0.target) != nil }) else { return waiting }
        let owners = try tagOwners(device: device, tx: tx)
        let now = clock()
        var kept: [Rotation] = []
        for var rotation in waiting {
            if let key = tagKey(of: rotation.target), let owner = owners[key], owner != rotation.target {
                let before = rotation
                rotation.cancel(reason: "superseded by \(owner)", now: now)
                try save(rotation, previous: before, tx: tx)
                continue
            }
            if let id = rotation.target.campaignID, let campaign = campaigns[id],
                campaign.state == .paused || campaign.state == .scheduled
            {
                continue
            }
            kept.append(rotation)
        }
        return kept
    }

    func rotationPolicy(for target: RotationTarget) -> RotationPolicy {
        guard let id = target.campaignID, let campaign = campaigns[id] else { return policy }
        return campaign.policy.rotationPolicy(base: policy)
    }

    var shortestAckTimeout: Int64 {
        campaigns.values.compactMap(\.policy.ackTimeout).reduce(policy.ackTimeout, min)
    }

    // MARK: Members

    /// The creation order of the next campaign: after every campaign known.
    var nextCampaignSequence: Int64 { (campaigns.values.compactMap(\.sequence).max() ?? 0) + 1 }

    /// A campaign's member counts per wave: counted once, then kept up to date as members are saved (a tick needs
    /// them for every running campaign, four times a second, and counting scans all of a campaign's members).
    /// Exact on one node, where every member write goes through ``saveMember(_:previous:tx:)``; counted again
    /// after 10 s all the same, and after 1 s in a cluster, where other replicas write members too.
    func memberCounts(_ id: String, tx: any StoreTransaction) throws -> [Int: WaveCounts] {
        let now = monotonic()
        if let cached = memberCountCache[id], now - cached.at < (cluster == nil ? 10 : 1) { return cached.counts }
        let counts = try tx.memberCounts(campaign: id)
        memberCountCache[id] = (counts, now)
        return counts
    }

    /// Saves a member, and moves it in the kept counts from `previous` (nil: a new member).
    func saveMember(_ member: CampaignMember, previous: CampaignMember?, tx: any StoreTransaction) throws {
        try tx.saveMember(member)
        guard var entry = memberCountCache[member.campaign] else { return }
        if let previous { entry.counts[previous.wave, default: WaveCounts()].add(previous, sign: -1) }
        entry.counts[member.wave, default: WaveCounts()].add(member)
        memberCountCache[member.campaign] = entry
    }

    /// A campaign rotation changed: the member's state follows its rotations.
    func memberChanged(_ rotation: Rotation, tx: any StoreTransaction) throws {
        guard let id = rotation.target.campaignID, let campaign = campaigns[id],
            var member = try tx.member(campaign: id, device: rotation.device)
        else { return }
        // A one-target campaign (the usual case) has this one rotation per device: no need to read them again.
        let mine =
            campaign.targets.count == 1
            ? [rotation]
            : try tx.rotations(device: rotation.device).filter { $0.target.campaignID == id }
        let (state, settled) = MemberState.aggregate(mine)
        let reason = mine.first {
            $0.state == .rejected || $0.state == .failed || $0.state == .timedOut || $0.state == .cancelled
        }?.lastError
        guard member.state != state || member.settled != settled || member.reason != reason else { return }
        let before = member
        member.state = state
        member.settled = settled
        member.reason = reason
        member.updatedAt = clock()
        try saveMember(member, previous: before, tx: tx)
        dirtyCampaigns.insert(id)
    }

    /// Continuous campaigns take in devices that match their selection when they show up (or their credentials
    /// come close to expiry).
    func joinContinuous(device: DeviceRecord, tx: any StoreTransaction) throws {
        let open = campaigns.values.filter { $0.policy.continuous && !$0.state.isFinal }
        guard !open.isEmpty, device.inventory != nil else { return }
        let now = clock()
        let memberOf = Set(try tx.memberships(device: device.id).map(\.campaign))
        for campaign in open where !memberOf.contains(campaign.id) {
            guard
                campaign.select.matches(
                    device: device.id, inventory: device.inventory, now: now,
                    expiry: { self.catalogue.expiry(of: device.inventory, tag: $0) })
            else { continue }
            try saveMember(
                CampaignMember(
                    campaign: campaign.id, device: device.id, wave: campaign.currentWave, state: .waiting,
                    settled: false,
                    reason: nil, updatedAt: now),
                previous: nil, tx: tx)
            dirtyCampaigns.insert(campaign.id)
            logger.info(
                "device joins a continuous campaign",
                metadata: ["device": "\(device.id)", "campaign": "\(campaign.id)"])
        }
    }

    /// Admits a waiting member: one rotation per campaign target (verified at once when the device already
    /// holds the chain), other targets' unsent rotations of the same tags cancelled, and its bundle issued.
    /// Returns true when a bundle is to go out (it takes a token).
    private func admit(
        _ member: CampaignMember, campaign: inout Campaign, tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws -> Bool {
        let now = clock()
        /// Ends the member without a rotation.
        func settle(_ state: MemberState, _ reason: String) throws -> Bool {
            let waiting = member
            var member = member
            member.state = state
            member.settled = true
            member.reason = reason
            member.updatedAt = now
            try saveMember(member, previous: waiting, tx: tx)
            return false
        }
        try tx.lockDevice(member.device)
        guard let device = try tx.device(member.device), let inventory = device.inventory else {
            return try settle(.failed, "device has sent no inventory")
        }
        var existing = Dictionary(uniqueKeysWithValues: try tx.rotations(device: device.id).map { ($0.target, $0) })
        // A newer campaign that already admitted this device keeps the tag.
        for (key, owner) in try tagOwners(device: device.id, tx: tx)
        where campaign.targets.contains(where: { TagKey(tag: $0.tag, type: $0.type) == key }) {
            guard let otherID = owner.campaignID, let other = campaigns[otherID],
                other.id != campaign.id,
                other.precedence > campaign.precedence
            else { continue }
            return try settle(.cancelled, "superseded by the newer campaign \(other.name) (\(other.id))")
        }
        var plans: [(index: Int, digest: String, holds: Bool)] = []
        for index in campaign.targets.indices {
            let target = campaign.targets[index]
            let held = inventory.credential(tag: target.tag, type: target.type)?.sha256
            let (pem, problem) = catalogue.chain(
                for: &campaign, index: index, held: held, profile: profile, now: clock())
            guard let pem else {
                logger.warning(
                    "campaign member cannot be rotated",
                    metadata: ["device": "\(device.id)", "reason": "\(problem ?? "")"])
                return try settle(.failed, problem ?? "no chain for this device")
            }
            let digest = Hex.sha256(Array(pem.utf8))
            plans.append((index, digest, held == digest))
        }
        var sending = false
        for (index, digest, holds) in plans {
            let target = campaign.targets[index]
            let name = campaign.rotationTarget(index)
            for (otherName, var other) in existing
            where otherName != name && tagKey(of: otherName) == TagKey(tag: target.tag, type: target.type)
                && other.isCancellable
            {
                let before = other
                other.cancel(reason: "superseded by campaign \(campaign.name) (\(campaign.id))", now: now)
                try save(other, previous: before, tx: tx)
                existing[otherName] = other
            }
            var rotation = Rotation(device: device.id, target: name, sha256: digest, now: now)
            if holds {
                // Its inventory already shows the campaign's chain.
                rotation.inventoryArrived(
                    holdsTarget: true, reportedSeq: device.inventory?.seq ?? 0, fresh: false,
                    policy: rotationPolicy(for: name), now: now)
            } else {
                sending = true
            }
            try save(
                rotation, previous: existing[name], tx: tx,
                detail: "admitted by campaign \(campaign.name) (\(campaign.id))")
        }
        // In a cluster the bundle is issued by whichever replica claims it (claimOutboundWork).
        if sending, cluster == nil {
            try issueIfIdle(device: device, rotations: try tx.rotations(device: device.id), tx: tx, outbox: &outbox)
        }
        return sending
    }

    // MARK: Progress

    /// Starts scheduled campaigns, applies deadlines, moves waves on (or pauses on a threshold), admits waiting
    /// members within the rate and the windows, and publishes progress.
    func campaignTick(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        for id in campaigns.values.sorted(by: { $0.precedence < $1.precedence }).map(\.id) {
            guard var campaign = campaigns[id], !campaign.state.isFinal else { continue }
            let before = campaign
            try carryOut(campaign.tick(now: now), for: &campaign, tx: tx, outbox: &outbox)
            if campaign.state == .running, sweep.remove(id) != nil {
                try issueHeld(campaign, tx: tx, outbox: &outbox)
            }
            if campaign.state == .running {
                let counts = try memberCounts(id, tx: tx)
                try carryOut(campaign.advance(counts: counts, now: now), for: &campaign, tx: tx, outbox: &outbox)
            }
            if campaign != before {
                campaign.updatedAt = now
                try store(campaign, tx: tx)
                if campaign.state != before.state || campaign.currentWave != before.currentWave {
                    logger.notice(
                        "campaign \(before.state.rawValue) → \(campaign.state.rawValue)",
                        metadata: [
                            "campaign": "\(id)", "name": "\(campaign.name)",
                            "wave": "\(campaign.currentWave + 1)/\(campaign.waveCount)",
                            "reason": "\(campaign.reason ?? "-")",
                        ])
                }
            }
        }
        try sweepExpiring(tx: tx, now: now)
        try publishProgress(tx: tx, outbox: &outbox)
    }

    /// Devices that publish nothing still come due for renewal: every hour (and once after start), continuous
    /// campaigns that select on expiry look at every device again.
    private func sweepExpiring(tx: any StoreTransaction, now: Int64) throws {
        guard now >= nextExpirySweep else { return }
        nextExpirySweep = now + 3600
        guard
            campaigns.values.contains(where: { $0.policy.continuous && !$0.state.isFinal && $0.select.expiryTag != nil }
            )
        else { return }
        var after: String?
        while true {
            let page = try tx.devices(after: after, limit: 1000)
            guard let last = page.last else { break }
            for device in page {
                try tx.lockDevice(device.id)
                try joinContinuous(device: device, tx: tx)
            }
            after = last.id
        }
    }

    private func admitWaiting(_ campaign: inout Campaign, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        // Back-pressure: admit no faster than bundles leave. Without it a large campaign with no rate queued
        // tens of thousands of bundles behind the in-flight window, and those issued last timed out (the ack
        // timeout runs from issue until the broker takes the last part) before they were even sent: at 100,000
        // devices 11 % of the first wave, which paused the campaign on its error threshold.
        var budget = min(2000, max(0, 2 * maxInflight - queuedPublishes - outbox.count))
        if campaign.policy.rate != nil, var bucket = buckets[campaign.id] {
            bucket.refill(now: monotonic())
            budget = min(budget, bucket.available)
            buckets[campaign.id] = bucket
        }
        guard budget > 0 else { return }
        let waiting = try tx.members(
            campaign: campaign.id, maxWave: campaign.currentWave, state: .waiting, after: nil, limit: budget)
        var used = 0
        for member in waiting where try admit(member, campaign: &campaign, tx: tx, outbox: &outbox) {
            used += 1
        }
        if used > 0, campaign.policy.rate != nil { buckets[campaign.id]?.take(used) }
    }

    /// After a resume: bundles held back while the campaign was paused go out.
    private func issueHeld(_ campaign: Campaign, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        var after: String?
        while true {
            let page = try tx.members(campaign: campaign.id, maxWave: nil, state: .pending, after: after, limit: 1000)
            guard let last = page.last else { break }
            for member in page {
                try tx.lockDevice(member.device)
                guard let device = try tx.device(member.device) else { continue }
                try issueIfIdle(
                    device: device, rotations: try tx.rotations(device: member.device), tx: tx, outbox: &outbox)
            }
            after = last.device
        }
    }

    // MARK: Operator actions

    /// Carries out what a campaign's transition asks for.
    func carryOut(
        _ actions: [CampaignAction], for campaign: inout Campaign, tx: any StoreTransaction, outbox: inout [Outbound]
    ) throws {
        for action in actions {
            switch action {
            case .cancelUnsent(let reason):
                campaigns[campaign.id] = campaign
                try cancelUnsent(campaign, reason: reason, tx: tx)
            case .issueHeld:
                sweep.insert(campaign.id)  // on the next tick, once the campaign runs
            case .admitWaiting:
                try admitWaiting(&campaign, tx: tx, outbox: &outbox)
            }
        }
    }

    func abort(_ campaign: inout Campaign, reason: String, tx: any StoreTransaction) throws {
        var none: [Outbound] = []
        try carryOut(campaign.abort(reason: reason, now: clock()), for: &campaign, tx: tx, outbox: &none)
    }

    /// Cancels every member of an aborted campaign not yet sent a bundle; in-flight bundles are not recalled
    /// (their acks still count).
    private func cancelUnsent(_ campaign: Campaign, reason: String, tx: any StoreTransaction) throws {
        let now = clock()
        for state in [MemberState.waiting, .pending, .failed, .timedOut] {
            var after: String?
            while true {
                let page = try tx.members(campaign: campaign.id, maxWave: nil, state: state, after: after, limit: 1000)
                guard let last = page.last else { break }
                for var member in page {
                    if state == .waiting {
                        let before = member
                        member.state = .cancelled
                        member.settled = true
                        member.reason = "campaign aborted: \(reason)"
                        member.updatedAt = now
                        try saveMember(member, previous: before, tx: tx)
                        continue
                    }
                    try tx.lockDevice(member.device)
                    for var rotation in try tx.rotations(device: member.device)
                    where rotation.target.campaignID == campaign.id && rotation.isCancellable {
                        let before = rotation
                        rotation.cancel(reason: "campaign aborted: \(reason)", now: now)
                        try save(rotation, previous: before, tx: tx)
                    }
                }
                after = last.device
            }
        }
    }

    // MARK: Status

    func status(_ campaign: Campaign, tx: any StoreTransaction, failures limit: Int = 100) throws -> [String: Any] {
        let counts = try memberCounts(campaign.id, tx: tx)
        var total = WaveCounts()
        var waves: [[String: Any]] = []
        for index in 0..<campaign.waveCount {
            let counted = counts[index] ?? WaveCounts()
            for (state, n) in counted.states { total.states[state, default: 0] += n }
            total.settled += counted.settled
            let state: String
            switch campaign.state {
            case .completed: state = "completed"
            case .aborted: state = index < campaign.currentWave ? "completed" : "aborted"
            default:
                state =
                    index < campaign.currentWave
                    ? "completed"
                    : index > campaign.currentWave
                        ? "pending"
                        : campaign.state == .running ? "running" : campaign.state.rawValue
            }
            waves.append(["index": index, "size": counted.size, "state": state, "states": Self.stateCounts(counted)])
        }
        var failures: [[String: Any]] = []
        for state in [MemberState.rejected, .failed, .timedOut] where failures.count < limit {
            for member in try tx.members(
                campaign: campaign.id, maxWave: nil, state: state, after: nil, limit: limit - failures.count)
            {
                var entry: [String: Any] = [
                    "device": member.device, "state": member.state.rawValue, "settled": member.settled,
                ]
                entry["code"] = member.code
                entry["reason"] = member.reason
                failures.append(entry)
            }
        }
        let done = total.settled
        let rate = throughput(campaign.id, done: done)
        var result: [String: Any] = [
            "id": campaign.id, "name": campaign.name, "state": campaign.state.rawValue, "origin": campaign.origin,
            "states": Self.stateCounts(total), "total": total.size, "waves": waves, "currentWave": campaign.currentWave,
            "failures": failures, "rate": rate, "createdAt": campaign.createdAt, "updatedAt": campaign.updatedAt,
            "continuous": campaign.policy.continuous, "select": campaign.select.json,
            "targets": campaign.targets.enumerated().map { index, target -> [String: Any] in
                var entry: [String: Any] = [
                    "rotationTarget": campaign.rotationTarget(index).description, "tag": target.tag,
                    "type": target.type,
                    "strategy": target.strategy.rawValue, "sha256": target.sha256,
                ]
                entry["credential"] = target.credential
                if !target.overlaps.isEmpty {
                    entry["overlaps"] = target.overlaps.mapValues { Hex.sha256(Array($0.utf8)) }
                }
                return entry
            },
        ]
        result["reason"] = campaign.reason
        result["finishedAt"] = campaign.finishedAt
        result["deadline"] = campaign.policy.deadline
        result["rateLimit"] = campaign.policy.rate
        let remaining = total.size - done
        if campaign.state.isFinal || remaining == 0 {
            result["eta"] = 0
        } else if rate > 0 {
            result["eta"] = Int((Double(remaining) / rate).rounded(.up))
        } else {
            result["eta"] = NSNull()
        }
        return result
    }

    static func stateCounts(_ counts: WaveCounts) -> [String: Int] {
        var states = Dictionary(uniqueKeysWithValues: MemberState.allCases.map { ($0.rawValue, 0) })
        for (state, n) in counts.states { states[state.rawValue] = n }
        return states
    }

    /// Devices settled per second over the last 30 s (0 until two samples a second apart exist).
    private func throughput(_ id: String, done: Int) -> Double {
        let now = monotonic()
        var samples = progress[id] ?? []
        if samples.last.map({ now - $0.at >= 0.5 }) ?? true { samples.append((now, done)) }
        samples.removeAll { now - $0.at > 30 }
        progress[id] = samples
        guard let first = samples.first, now - first.at >= 1 else { return 0 }
        return max(0, Double(done - first.done) / (now - first.at))
    }

    /// Publishes each changed campaign's status, retained, at most once a second.
    private func publishProgress(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = monotonic()
        for id in dirtyCampaigns.sorted() {
            guard let campaign = campaigns[id] else {
                dirtyCampaigns.remove(id)
                continue
            }
            if let last = lastStatus[id], now - last.at < 1 { continue }
            dirtyCampaigns.remove(id)
            let body = try status(campaign, tx: tx, failures: 20)
            guard
                let payload = try? JSONSerialization.data(
                    withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])
            else { continue }
            let bytes = Array(payload)
            let unchanged = lastStatus[id]?.payload == bytes
            lastStatus[id] = (bytes, now)
            if unchanged { continue }
            outbox.append(Outbound(topic: Topics.campaignStatus(id), payload: bytes, kind: .other, retain: true))
        }
        // Running campaigns' rate and ETA move with time even when no member changed.
        for campaign in campaigns.values where campaign.state == .running && !dirtyCampaigns.contains(campaign.id) {
            if let last = lastStatus[campaign.id], now - last.at < 5 { continue }
            dirtyCampaigns.insert(campaign.id)
        }
    }

    // MARK: Creation

    /// campaign.create: parse, resolve chains, run the never-brick preflight, select devices, cut waves, store.
    func createCampaign(params: [String: Any], origin: String) async throws -> Campaign {
        let now = clock()
        let date = Date(timeIntervalSince1970: Double(now))
        let request = try CampaignRequest.parse(params, now: now)
        if let same = campaigns.values.first(where: { $0.name == request.name && !$0.state.isFinal }) {
            throw Refusal(
                "duplicate_name", "a campaign named '\(request.name)' is already \(same.state.rawValue) (\(same.id))",
                details: ["campaign": .string(same.id)])
        }
        // 1. Every chain parses, is valid long enough, is a CA, fits.
        var chains: [CertificateChain] = []
        for (index, target) in request.targets.enumerated() {
            let what = "targets[\(index)] (tag \(target.tag))"
            var pem = target.chain
            if let name = target.credential {
                guard let chain = catalogue.named(name, targets: targetsByName) else {
                    throw Refusal(
                        "unknown_credential", "\(what): '\(name)' is neither in the catalogue nor a configured target",
                        details: ["what": .string(what), "credential": .string(name)])
                }
                pem = chain.pem
            }
            chains.append(
                try Preflight.checkChain(
                    pem ?? "", type: target.type, profile: profile, now: date,
                    minRemainingValidity: request.minRemainingValidity, what: what))
        }
        // 2. Who is in it.
        let selected: [DeviceRecord] = try store.read { tx in try select(request.select, now: now, tx: tx) }
        if selected.isEmpty, !request.policy.continuous {
            throw Refusal("empty_selection", "the selection \(request.select.json) matches no known device")
        }
        // 3. overlap: compose per chain held now; every result must fit.
        var targets: [CampaignTarget] = []
        for (index, target) in request.targets.enumerated() {
            let what = "targets[\(index)] (tag \(target.tag))"
            var resolved = CampaignTarget(
                tag: target.tag, type: target.type, strategy: target.strategy, pem: chains[index].pem,
                credential: target.credential)
            if target.strategy == .overlap {
                var holders: [String: Int] = [:]
                for device in selected {
                    guard let held = device.inventory?.credential(tag: target.tag, type: target.type)?.sha256,
                        held != resolved.sha256
                    else { continue }
                    holders[held, default: 0] += 1
                }
                for (held, count) in holders.sorted(by: { $0.key < $1.key }) {
                    guard let current = catalogue.known[held]?.chain else {
                        throw Refusal(
                            "unknown_current_chain",
                            "\(what): overlap needs the chain \(count) selected device(s) hold now (sha256 \(held)), "
                                + "which certrot does not know; add it to the config's catalogue, or use replace",
                            details: ["what": .string(what), "held": .string(held), "devices": .int(Int64(count))])
                    }
                    let composed = Preflight.overlap(new: chains[index], current: current, now: date)
                    try Preflight.checkOverlapSize(composed, held: held, profile: profile, what: what)
                    resolved.overlaps[held] = composed.pem
                }
            }
            targets.append(resolved)
        }
        // 4. Never brick: the endpoint must chain to roots each device will hold afterwards.
        if let endpoint = request.endpointChain {
            for (index, target) in targets.enumerated() where target.type == CredentialType.rootCAChain.rawValue {
                let what = "targets[\(index)] (tag \(target.tag))"
                var rootSets: [String] = [target.pem]
                rootSets += target.overlaps.keys.sorted().compactMap { target.overlaps[$0] }
                for pem in rootSets {
                    let roots = (try? PEM.normalizeChain(pem))?.certificates ?? []
                    try await Preflight.checkEndpoint(endpoint, roots: roots, now: date, limit: 4096, what: what)
                }
            }
        }
        // 5. Waves: devices in a stable pseudo-random order, so that canaries are spread over the fleet.
        var campaign = Campaign(
            id: "cmp-" + String(Engine.newJTI().prefix(10)), name: request.name, now: now, targets: targets,
            select: request.select, policy: request.policy, origin: origin)
        campaign.sequence = nextCampaignSequence
        campaign.schedule(now: now)
        let order = selected.map { (Hex.sha256(Array("\(campaign.id)\n\($0.id)".utf8)), $0.id) }.sorted { $0.0 < $1.0 }
        let ends = WaveSpec.cumulativeSizes(request.policy.waves, total: order.count)
        campaign.setWaveCount(ends.count)
        try store.write { tx in
            var wave = 0
            for (position, (_, device)) in order.enumerated() {
                while position >= ends[wave] { wave += 1 }
                try tx.saveMember(
                    CampaignMember(
                        campaign: campaign.id, device: device, wave: wave, state: .waiting, settled: false, reason: nil,
                        updatedAt: now))
            }
            try store(campaign, tx: tx)
        }
        logger.notice(
            "campaign created",
            metadata: [
                "campaign": "\(campaign.id)", "name": "\(campaign.name)", "devices": "\(order.count)",
                "waves": "\(ends)", "origin": "\(origin)",
            ])
        return campaign
    }

    private func select(_ selection: CampaignSelection, now: Int64, tx: any StoreTransaction) throws -> [DeviceRecord] {
        if case .devices(let ids) = selection {
            return try Set(ids.map(DeviceKey.init)).sorted().compactMap { try tx.device($0.id) }.filter {
                $0.inventory != nil
            }
        }
        var result: [DeviceRecord] = []
        var after: String?
        while true {
            let page = try tx.devices(after: after, limit: 2000)
            guard let last = page.last else { break }
            for device in page where device.inventory != nil {
                if selection.matches(
                    device: device.id, inventory: device.inventory, now: now,
                    expiry: { self.catalogue.expiry(of: device.inventory, tag: $0) })
                {
                    result.append(device)
                }
            }
            after = last.id
        }
        return result
    }

    // MARK: JSON-RPC

    /// The campaign methods; nil for a method this does not know.
    func campaignMethod(_ method: String, params: [String: Any], tx: any StoreTransaction) throws -> RPC.HandlerResult?
    {
        switch method {
        case "campaign.create":
            return .deferred
        case "campaign.list":
            var list: [[String: Any]] = []
            let only = params["state"] as? String
            if params["state"] != nil, only.flatMap(CampaignState.init(rawValue:)) == nil {
                throw RPC.Failure(
                    code: .invalidParams,
                    message: "params.state must be one of \(CampaignState.allCases.map(\.rawValue))")
            }
            for campaign in campaigns.values.sorted(by: { $0.precedence < $1.precedence })
            where only == nil || campaign.state.rawValue == only {
                var total = WaveCounts()
                for counted in try tx.memberCounts(campaign: campaign.id).values {
                    for (state, n) in counted.states { total.states[state, default: 0] += n }
                }
                var entry: [String: Any] = [
                    "id": campaign.id, "name": campaign.name, "state": campaign.state.rawValue,
                    "origin": campaign.origin,
                    "createdAt": campaign.createdAt, "total": total.size, "states": Self.stateCounts(total),
                    "currentWave": campaign.currentWave, "waves": campaign.waveCount,
                ]
                entry["reason"] = campaign.reason
                list.append(entry)
            }
            return .value(["campaigns": list])
        case "campaign.status":
            return .value(try status(try campaign(params), tx: tx))
        case "campaign.pause":
            var campaign = try campaign(params)
            let reason = "paused by an operator" + (try reasonParam(params)).map { ": \($0)" }.orEmpty
            try transition { () throws(CampaignStateError) in try campaign.pause(reason: reason) }
            try changed(campaign, tx: tx)
            return .value(["id": campaign.id, "state": campaign.state.rawValue])
        case "campaign.resume":
            var campaign = try campaign(params)
            // Accepting a threshold pause takes the wave's counts as they are now.
            let counts =
                campaign.awaitingConfirmation
                ? WaveCounts() : try tx.memberCounts(campaign: campaign.id)[campaign.currentWave] ?? WaveCounts()
            let now = clock()
            let actions = try transition { () throws(CampaignStateError) in
                try campaign.resume(currentWave: counts, now: now)
            }
            var none: [Outbound] = []
            try carryOut(actions, for: &campaign, tx: tx, outbox: &none)
            try changed(campaign, tx: tx)
            return .value(["id": campaign.id, "state": campaign.state.rawValue, "currentWave": campaign.currentWave])
        case "campaign.abort":
            var campaign = try campaign(params)
            let reason = "aborted by an operator" + (try reasonParam(params)).map { ": \($0)" }.orEmpty
            let now = clock()
            let actions = try transition { () throws(CampaignStateError) in
                try campaign.abort(reason: reason, now: now)
            }
            var none: [Outbound] = []
            try carryOut(actions, for: &campaign, tx: tx, outbox: &none)
            try changed(campaign, tx: tx)
            let counts = try tx.memberCounts(campaign: campaign.id).values.reduce(0) { $0 + $1.cancelled }
            return .value(["id": campaign.id, "state": campaign.state.rawValue, "cancelled": counts])
        default:
            return nil
        }
    }

    /// An operator's transition: one the campaign's state does not allow is the request's error.
    private func transition<T>(_ body: () throws(CampaignStateError) -> T) throws(RPC.Failure) -> T {
        do {
            return try body()
        } catch {
            throw RPC.Failure(code: .campaignState, message: error.message)
        }
    }

    private func changed(_ campaign: Campaign, tx: any StoreTransaction) throws {
        var campaign = campaign
        campaign.updatedAt = clock()
        try store(campaign, tx: tx)
        lastStatus[campaign.id] = nil
        logger.notice(
            "campaign \(campaign.state.rawValue)",
            metadata: ["campaign": "\(campaign.id)", "reason": "\(campaign.reason ?? "-")"])
    }

    private func campaign(_ params: [String: Any]) throws(RPC.Failure) -> Campaign {
        guard let id = params["id"] as? String, !id.isEmpty else {
            throw RPC.Failure(code: .invalidParams, message: "params.id (a campaign id) is required")
        }
        guard let campaign = campaigns[id] else {
            throw RPC.Failure(code: .unknownCampaign, message: "no campaign '\(id.prefix(80))'")
        }
        return campaign
    }

    private func reasonParam(_ params: [String: Any]) throws(RPC.Failure) -> String? {
        guard let raw = params["reason"] else { return nil }
        guard let reason = raw as? String, reason.utf8.count <= 512 else {
            throw RPC.Failure(code: .invalidParams, message: "params.reason must be a string of at most 512 bytes")
        }
        return reason
    }

    /// Answers a deferred campaign.create once its checks have run.
    func answer(_ request: RPC.Deferred) async {
        let result: Result<Any, RPC.Failure>
        do {
            let campaign = try await createCampaign(params: request.params, origin: "rpc")
            if let signedBy = request.signedBy {
                logger.notice(
                    "operator request",
                    metadata: ["method": "campaign.create", "operator": "\(signedBy)", "campaign": "\(campaign.id)"])
            }
            let total = try store.read { tx in
                try tx.memberCounts(campaign: campaign.id).values.reduce(0) { $0 + $1.size }
            }
            result = .success([
                "id": campaign.id, "devices": total, "waves": campaign.waveCount, "state": campaign.state.rawValue,
            ])
        } catch let refusal as Refusal {
            logger.notice(
                "campaign refused", metadata: ["reason": "\(refusal.reason)", "message": "\(refusal.message)"])
            result = .failure(RPC.Failure(refusal))
        } catch let failure as RPC.Failure {
            result = .failure(failure)
        } catch {
            logger.error("campaign.create failed", metadata: ["error": "\(error)"])
            result = .failure(RPC.Failure(code: .internalError, message: "internal error; see the daemon log"))
        }
        if let reply = RPC.reply(to: request, result: result, drops: drops) { enqueue(reply) }
    }
}

extension Optional where Wrapped == String {
    var orEmpty: String { self ?? "" }
}

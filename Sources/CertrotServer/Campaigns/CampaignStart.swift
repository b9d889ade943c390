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
            for campaign in try tx.campaigns() {
                remember(campaign)
                auditedCampaignStates[campaign.id] = Self.auditState(campaign)
            }
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
                campaign.sequence = registry.nextSequence
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

    /// A campaign's state as the audit log records it: a change of it is a `campaign.state` record.
    static func auditState(_ campaign: Campaign) -> String {
        campaign.state.rawValue + (campaign.awaitingConfirmation ? " (awaiting confirmation)" : "")
    }

    func remember(_ campaign: Campaign) {
        registry.put(campaign, now: monotonic())
        catalogue.learn(campaign)
    }

    func store(_ campaign: Campaign, tx: any StoreTransaction) throws {
        let state = Self.auditState(campaign)
        if auditedCampaignStates[campaign.id] != state {
            var body: [String: Any] = [
                "state": campaign.state.rawValue, "name": campaign.name, "origin": campaign.origin,
                "wave": campaign.currentWave, "awaitingConfirmation": campaign.awaitingConfirmation,
            ]
            body["previous"] = auditedCampaignStates[campaign.id]
            body["reason"] = campaign.reason
            try audit(.campaignState, subject: campaign.id, body: body, tx: tx)
            auditedCampaignStates[campaign.id] = state
        }
        try tx.saveCampaign(campaign)
        remember(campaign)
        registry.dirty.insert(campaign.id)
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
        registry.rotationPolicy(for: target, base: policy)
    }

    var shortestAckTimeout: Int64 { registry.shortestAckTimeout(base: policy.ackTimeout) }
}

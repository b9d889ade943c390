import CertrotCore
import Foundation
import Logging

/// Campaign members: counts kept up to date, state following their rotations, continuous joins, admission.
extension Engine {
    // MARK: Members

    /// A campaign rotation changed: the member's state follows its rotations.
    func memberChanged(_ rotation: Rotation, tx: any StoreTransaction) throws {
        if case .clientCert = rotation.target {
            // Client-certificate campaigns' members follow the device's rotation for the policy while unsettled.
            for member in try tx.memberships(device: rotation.device) where !member.settled && member.state != .waiting
            {
                guard let campaign = campaigns[member.campaign], campaign.owns(rotation.target) else { continue }
                try follow(rotation, member: member, campaign: campaign.id, rotations: [rotation], tx: tx)
            }
            return
        }
        guard let id = rotation.target.campaignID, let campaign = campaigns[id],
            let member = try tx.member(campaign: id, device: rotation.device)
        else { return }
        // A one-target campaign (the usual case) has this one rotation per device: no need to read them again.
        let mine =
            campaign.targets.count == 1
            ? [rotation]
            : try tx.rotations(device: rotation.device).filter { $0.target.campaignID == id }
        try follow(rotation, member: member, campaign: id, rotations: mine, tx: tx)
    }

    /// The member's state from its rotations.
    private func follow(
        _ rotation: Rotation, member: CampaignMember, campaign id: String, rotations mine: [Rotation],
        tx: any StoreTransaction
    ) throws {
        var member = member
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
        try registry.saveMember(member, previous: before, tx: tx)
        registry.dirty.insert(id)
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
            try registry.saveMember(
                CampaignMember(
                    campaign: campaign.id, device: device.id, wave: campaign.currentWave, state: .waiting,
                    settled: false,
                    reason: nil, updatedAt: now),
                previous: nil, tx: tx)
            registry.dirty.insert(campaign.id)
            logger.info(
                "device joins a continuous campaign",
                metadata: ["device": "\(device.id)", "campaign": "\(campaign.id)"])
        }
    }

    /// Admits a waiting member: one rotation per campaign target (verified at once when the device already
    /// holds the chain), other targets' unsent rotations of the same tags cancelled, and its bundle issued.
    /// Returns true when a bundle is to go out (it takes a token).
    func admit(
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
            try registry.saveMember(member, previous: waiting, tx: tx)
            return false
        }
        try tx.lockDevice(member.device)
        guard let device = try tx.device(member.device), let inventory = device.inventory else {
            return try settle(.failed, "device has sent no inventory")
        }
        if let name = campaign.clientCert {
            return try admitClientCert(
                member, policy: name, campaign: campaign, device: device, inventory: inventory, tx: tx,
                outbox: &outbox, settle: settle)
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
}

extension Engine {
    /// Admits a member of a client-certificate campaign: the device's rotation for the policy starts over as a
    /// keygen (or, when a renewal is already under way, the member follows that one).
    func admitClientCert(
        _ member: CampaignMember, policy name: String, campaign: Campaign, device: DeviceRecord, inventory: Inventory,
        tx: any StoreTransaction, outbox: inout [Outbound], settle: (MemberState, String) throws -> Bool
    ) throws -> Bool {
        guard let policy = clientCerts.byName[name] else {
            return try settle(.failed, "no clientCerts policy '\(name)'")
        }
        guard let active = inventory.active, policy.tags.contains(active) else {
            return try settle(
                .failed, "the device reports no active tag of policy \(name) (\(policy.tags.map(String.init)))")
        }
        let target = RotationTarget.clientCert(name)
        let current = try tx.rotations(device: device.id).first { $0.target == target }
        var waiting = member
        waiting.state = .pending
        waiting.updatedAt = clock()
        try registry.saveMember(waiting, previous: member, tx: tx)
        if let current, !current.isSettled {
            try memberChanged(current, tx: tx)  // a renewal is under way: the member follows it
            return false
        }
        let rotation = Rotation(device: device.id, target: target, sha256: Rotation.digestUnknown, now: clock())
        try save(
            rotation, previous: current, tx: tx, detail: "renewal asked by campaign \(campaign.name) (\(campaign.id))")
        if cluster == nil {
            try issueIfIdle(device: device, rotations: try tx.rotations(device: device.id), tx: tx, outbox: &outbox)
        }
        return true
    }
}

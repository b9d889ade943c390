import CertrotCore
import Foundation
import Logging

/// Campaign progress on each tick, and carrying out what the core's lifecycle decides.
extension Engine {
    // MARK: Progress

    /// Starts scheduled campaigns, applies deadlines, moves waves on (or pauses on a threshold), admits waiting
    /// members within the rate and the windows, and publishes progress.
    func campaignTick(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = clock()
        for id in campaigns.values.sorted(by: { $0.precedence < $1.precedence }).map(\.id) {
            guard var campaign = campaigns[id], !campaign.state.isFinal else { continue }
            let before = campaign
            try carryOut(campaign.tick(now: now), for: &campaign, tx: tx, outbox: &outbox)
            if campaign.state == .running, registry.sweep.remove(id) != nil {
                try issueHeld(campaign, tx: tx, outbox: &outbox)
            }
            if campaign.state == .running {
                let counts = try registry.memberCounts(id, now: monotonic(), tx: tx)
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
    func sweepExpiring(tx: any StoreTransaction, now: Int64) throws {
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

    func admitWaiting(_ campaign: inout Campaign, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        // Back-pressure: admit no faster than bundles leave. Without it a large campaign with no rate queued
        // tens of thousands of bundles behind the in-flight window, and those issued last timed out (the ack
        // timeout runs from issue until the broker takes the last part) before they were even sent: at 100,000
        // devices 11 % of the first wave, which paused the campaign on its error threshold.
        var budget = min(2000, max(0, 2 * maxInflight - queuedPublishes - outbox.count))
        if campaign.policy.rate != nil, var bucket = registry.buckets[campaign.id] {
            bucket.refill(now: monotonic())
            budget = min(budget, bucket.available)
            registry.buckets[campaign.id] = bucket
        }
        guard budget > 0 else { return }
        let waiting = try tx.members(
            campaign: campaign.id, maxWave: campaign.currentWave, state: .waiting, after: nil, limit: budget)
        try tx.prefetch(devices: waiting.map(\.device))
        var used = 0
        for member in waiting where try admit(member, campaign: &campaign, tx: tx, outbox: &outbox) {
            used += 1
        }
        if used > 0, campaign.policy.rate != nil { registry.buckets[campaign.id]?.take(used) }
    }

    /// After a resume: bundles held back while the campaign was paused go out.
    func issueHeld(_ campaign: Campaign, tx: any StoreTransaction, outbox: inout [Outbound]) throws {
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
                registry.put(campaign, now: monotonic())
                try cancelUnsent(campaign, reason: reason, tx: tx)
            case .issueHeld:
                registry.sweep.insert(campaign.id)  // on the next tick, once the campaign runs
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
    func cancelUnsent(_ campaign: Campaign, reason: String, tx: any StoreTransaction) throws {
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
                        try registry.saveMember(member, previous: before, tx: tx)
                        continue
                    }
                    try tx.lockDevice(member.device)
                    for var rotation in try tx.rotations(device: member.device)
                    where campaign.owns(rotation.target) && rotation.isCancellable {
                        let before = rotation
                        rotation.cancel(reason: "campaign aborted: \(reason)", now: now)
                        try save(rotation, previous: before, tx: tx)
                    }
                }
                after = last.device
            }
        }
    }
}

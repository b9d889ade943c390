import CertrotCore
import Foundation
import Logging

/// A campaign's status: what campaign.status answers and what the retained progress topic carries.
extension Engine {
    // MARK: Status

    func status(
        _ campaign: Campaign, tx: any StoreTransaction, failures limit: Int = 100
    ) throws -> CampaignStatus.Result {
        let counts = try registry.memberCounts(campaign.id, now: monotonic(), tx: tx)
        var total = WaveCounts()
        var waves: [CampaignStatus.Result.Wave] = []
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
            waves.append(
                CampaignStatus.Result.Wave(
                    index: index, size: counted.size, state: state, states: Self.stateCounts(counted)))
        }
        var failures: [CampaignStatus.Result.Failure] = []
        for state in [MemberState.rejected, .failed, .timedOut] where failures.count < limit {
            for member in try tx.members(
                campaign: campaign.id, maxWave: nil, state: state, after: nil, limit: limit - failures.count)
            {
                failures.append(
                    CampaignStatus.Result.Failure(
                        device: member.device, state: member.state.rawValue, settled: member.settled,
                        code: member.code, reason: member.reason))
            }
        }
        let done = total.settled
        let rate = registry.throughput(campaign.id, done: done, now: monotonic())
        let remaining = total.size - done
        let eta: Int? =
            campaign.state.isFinal || remaining == 0 ? 0 : rate > 0 ? Int((Double(remaining) / rate).rounded(.up)) : nil
        return CampaignStatus.Result(
            id: campaign.id, name: campaign.name, state: campaign.state.rawValue, origin: campaign.origin,
            reason: campaign.reason, states: Self.stateCounts(total), total: total.size, waves: waves,
            currentWave: campaign.currentWave, failures: failures, rate: rate, eta: eta,
            rateLimit: campaign.policy.rate, deadline: campaign.policy.deadline,
            continuous: campaign.policy.continuous, select: campaign.select.wire,
            targets: campaign.targets.enumerated().map { index, target in
                CampaignStatus.Result.Target(
                    rotationTarget: campaign.rotationTarget(index).description, tag: target.tag, type: target.type,
                    strategy: target.strategy.rawValue, sha256: target.sha256, credential: target.credential,
                    overlaps: target.overlaps.isEmpty ? nil : target.overlaps.mapValues { Hex.sha256(Array($0.utf8)) })
            }, clientCert: campaign.clientCert, kind: campaign.clientCert == nil ? "ca-chain" : "client-cert",
            createdAt: campaign.createdAt, updatedAt: campaign.updatedAt, finishedAt: campaign.finishedAt)
    }

    static func stateCounts(_ counts: WaveCounts) -> [String: Int] {
        var states = Dictionary(uniqueKeysWithValues: MemberState.allCases.map { ($0.rawValue, 0) })
        for (state, n) in counts.states { states[state.rawValue] = n }
        return states
    }

    /// Publishes each changed campaign's status, retained, at most once a second.
    func publishProgress(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
        let now = monotonic()
        for id in registry.dirty.sorted() {
            guard let campaign = campaigns[id] else {
                registry.dirty.remove(id)
                continue
            }
            if let last = registry.lastStatus[id], now - last.at < 1 { continue }
            registry.dirty.remove(id)
            let bytes = try RPC.encode(status(campaign, tx: tx, failures: 20)).json
            let unchanged = registry.lastStatus[id]?.payload == bytes
            registry.lastStatus[id] = (bytes, now)
            if unchanged { continue }
            outbox.append(Outbound(topic: Topics.campaignStatus(id), payload: bytes, kind: .other, retain: true))
        }
        // Running campaigns' rate and ETA move with time even when no member changed.
        for campaign in campaigns.values where campaign.state == .running && !registry.dirty.contains(campaign.id) {
            if let last = registry.lastStatus[campaign.id], now - last.at < 5 { continue }
            registry.dirty.insert(campaign.id)
        }
    }
}

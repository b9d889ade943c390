import CertrotCore
import Foundation
import Logging

/// A campaign's status: what campaign.status answers and what the retained progress topic carries.
extension Engine {
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
    func throughput(_ id: String, done: Int) -> Double {
        let now = monotonic()
        var samples = progress[id] ?? []
        if samples.last.map({ now - $0.at >= 0.5 }) ?? true { samples.append((now, done)) }
        samples.removeAll { now - $0.at > 30 }
        progress[id] = samples
        guard let first = samples.first, now - first.at >= 1 else { return 0 }
        return max(0, Double(done - first.done) / (now - first.at))
    }

    /// Publishes each changed campaign's status, retained, at most once a second.
    func publishProgress(tx: any StoreTransaction, outbox: inout [Outbound]) throws {
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
}

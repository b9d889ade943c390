import CertrotCore

/// The campaigns the engine runs and what it keeps of them between batches: member counts kept up to date as
/// members are saved (a tick needs them for every running campaign, four times a second, and counting scans all of
/// a campaign's members), each campaign's token bucket, its settle-rate samples, and which campaigns' status is
/// due to be published. In memory; the campaigns themselves are stored, and counts are counted again when stale.
package final class CampaignRegistry {
    package private(set) var campaigns: [String: Campaign] = [:]
    /// Token buckets of campaigns with a `rate`.
    var buckets: [String: TokenBucket] = [:]
    /// Campaigns whose counts changed since their status was last published.
    var dirty: Set<String> = []
    /// The status last published per campaign, and when (monotonic seconds).
    var lastStatus: [String: (payload: [UInt8], at: Double)] = [:]
    /// Campaigns resumed: members held while paused are issued their bundles on the next tick.
    var sweep: Set<String> = []
    /// Seconds kept counts are trusted: exact on one node, where every member write goes through
    /// ``saveMember(_:previous:tx:)``, but counted again after 10 s all the same; 1 s in a cluster, where other
    /// replicas write members too.
    package var countsMaxAge: Double = 10
    private var counts: [String: (counts: [Int: WaveCounts], at: Double)] = [:]
    private var samples: [String: [(at: Double, done: Int)]] = [:]

    package init() {}

    package subscript(id: String) -> Campaign? { campaigns[id] }

    /// Keeps `campaign` (new or changed); a campaign with a new `rate` gets a new bucket.
    package func put(_ campaign: Campaign, now: Double) {
        campaigns[campaign.id] = campaign
        if let rate = campaign.policy.rate, buckets[campaign.id]?.rate != rate {
            buckets[campaign.id] = TokenBucket(rate: rate, now: now)
        }
    }

    /// The creation order of the next campaign: after every campaign known.
    package var nextSequence: Int64 { (campaigns.values.compactMap(\.sequence).max() ?? 0) + 1 }

    /// The rotation policy of a target: its campaign's overrides of `base`, for a campaign's target.
    package func rotationPolicy(for target: RotationTarget, base: RotationPolicy) -> RotationPolicy {
        guard let id = target.campaignID, let campaign = campaigns[id] else { return base }
        return campaign.policy.rotationPolicy(base: base)
    }

    /// The shortest ack timeout of `base` and every campaign's: what the tick looks for overdue acks with.
    package func shortestAckTimeout(base: Int64) -> Int64 {
        campaigns.values.compactMap(\.policy.ackTimeout).reduce(base, min)
    }

    /// Stored-rotation prefixes of campaigns whose bundles are held (paused or scheduled).
    package var held: [String] {
        campaigns.values.filter { $0.state == .paused || $0.state == .scheduled }.map(\.rotationTargetPrefix).sorted()
    }

    /// A campaign's member counts per wave: counted once, then kept up to date.
    package func memberCounts(_ id: String, now: Double, tx: any StoreTransaction) throws -> [Int: WaveCounts] {
        if let cached = counts[id], now - cached.at < countsMaxAge { return cached.counts }
        let counted = try tx.memberCounts(campaign: id)
        counts[id] = (counted, now)
        return counted
    }

    /// Saves a member, and moves it in the kept counts from `previous` (nil: a new member).
    package func saveMember(_ member: CampaignMember, previous: CampaignMember?, tx: any StoreTransaction) throws {
        try tx.saveMember(member)
        guard var entry = counts[member.campaign] else { return }
        if let previous { entry.counts[previous.wave, default: WaveCounts()].add(previous, sign: -1) }
        entry.counts[member.wave, default: WaveCounts()].add(member)
        counts[member.campaign] = entry
    }

    /// Forgets every kept count (a transaction that moved them rolled back).
    package func forgetCounts() { counts = [:] }

    /// Members settled per second over the last 30 s (0 until two samples a second apart exist); `done` is the
    /// campaign's settled members now.
    package func throughput(_ id: String, done: Int, now: Double) -> Double {
        var kept = samples[id] ?? []
        if kept.last.map({ now - $0.at >= 0.5 }) ?? true { kept.append((now, done)) }
        kept.removeAll { now - $0.at > 30 }
        samples[id] = kept
        guard let first = kept.first, now - first.at >= 1 else { return 0 }
        return max(0, Double(done - first.done) / (now - first.at))
    }
}

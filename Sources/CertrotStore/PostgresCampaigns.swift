import CertrotCore
import Foundation
import PostgresNIO

/// Campaigns and their members (tables `campaigns`, `campaign_members`), and the device pages a campaign selects from.
extension PostgresTransaction {
    func devices(after: String?, limit: Int) throws -> [DeviceRecord] {
        try query("SELECT * FROM devices WHERE id > \(after ?? "") ORDER BY id LIMIT \(limit)").map(device(from:))
    }

    func saveCampaign(_ campaign: Campaign) throws {
        let body = ByteBuffer(data: try JSONEncoder().encode(campaign))
        try execute(
            """
            INSERT INTO campaigns (id, name, state, created_at, body)
            VALUES (\(campaign.id), \(campaign.name), \(campaign.state.rawValue), \(campaign.createdAt), \(body))
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, state = excluded.state,
                created_at = excluded.created_at, body = excluded.body
            """)
    }

    func campaigns() throws -> [Campaign] {
        try query("SELECT body FROM campaigns ORDER BY created_at, id").map { row in
            var body = try row["body"].decode(ByteBuffer.self)
            return try JSONDecoder().decode(Campaign.self, from: Data(body.readBytes(length: body.readableBytes) ?? []))
        }
    }

    func saveMember(_ m: CampaignMember) throws {
        pending.members[.init(campaign: m.campaign, device: m.device)] = m
    }

    func member(campaign: String, device: String) throws -> CampaignMember? {
        if let kept = pending.members[.init(campaign: campaign, device: device)] { return kept }
        if let held = held[DeviceKey(device)] { return held.memberships.first { DeviceID.same($0.campaign, campaign) } }
        return try rows("SELECT * FROM campaign_members WHERE campaign = \(campaign) AND device = \(device)").first
            .map(Self.member(from:))
    }

    func memberships(device: String) throws -> [CampaignMember] {
        var found =
            try held[DeviceKey(device)]?.memberships
            ?? rows("SELECT * FROM campaign_members WHERE device = \(device)").map(Self.member(from:))
        for kept in pending.members.values where DeviceID.same(kept.device, device) {
            found = Self.laid(kept, over: found)
        }
        return found
    }

    func members(
        campaign: String, maxWave: Int?, state: MemberState?, after: String?, limit: Int
    ) throws -> [CampaignMember] {
        var binds = PostgresBindings()
        binds.append(campaign)
        binds.append(after ?? "")
        var sql = "SELECT * FROM campaign_members WHERE campaign = $1 AND device > $2"
        if let state {
            binds.append(state.rawValue)
            sql += " AND state = $\(binds.count)"
        }
        if let maxWave {
            binds.append(maxWave)
            sql += " AND wave <= $\(binds.count)"
        }
        binds.append(limit)
        sql += " ORDER BY device LIMIT $\(binds.count)"
        return try query(PostgresQuery(unsafeSQL: sql, binds: binds)).map(Self.member(from:))
    }

    func memberCounts(campaign: String) throws -> [Int: WaveCounts] {
        var counts: [Int: WaveCounts] = [:]
        for row in try query(
            """
            SELECT wave, state, COUNT(*) AS n, SUM(settled)::BIGINT AS s FROM campaign_members
            WHERE campaign = \(campaign) GROUP BY wave, state
            """)
        {
            guard let state = MemberState(rawValue: try row["state"].decode(String.self)) else { continue }
            let wave = try row["wave"].decode(Int.self)
            counts[wave, default: WaveCounts()].states[state] = try row["n"].decode(Int.self)
            counts[wave, default: WaveCounts()].settled += try row["s"].decode(Int?.self) ?? 0
        }
        return counts
    }

    static func member(from row: PostgresRandomAccessRow) throws -> CampaignMember {
        CampaignMember(
            campaign: try row["campaign"].decode(String.self), device: try row["device"].decode(String.self),
            wave: try row["wave"].decode(Int.self),
            state: MemberState(rawValue: try row["state"].decode(String.self)) ?? .pending,
            settled: try row["settled"].decode(Int.self) != 0, reason: try row["reason"].decode(String?.self),
            updatedAt: try row["updated_at"].decode(Int64.self))
    }
}

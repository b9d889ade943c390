import CertrotCore
import Foundation

extension RPC {
    /// Devices one device.list call looks at, at most, and the time it may take: an unauthenticated read must cost
    /// the daemon little whatever its filter (one that matches nothing used to scan 20,000 devices, ~1 s).
    static let scanBudget = 2000
    static let timeBudget = Duration.milliseconds(100)

    /// device.list: devices filtered by rotation state, campaign (and member state), digest held, expiry;
    /// `limit` (≤ 1000, default 100) per page, `after` the last ID of the previous page.
    static func deviceList(params: [String: Any], context: Context, tx: any StoreTransaction) throws -> [String: Any] {
        let allowed: Set<String> = ["state", "campaign", "holding", "expiringBefore", "tag", "after", "limit"]
        if let unknown = params.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw Failure(code: .invalidParams, message: "unknown parameter '\(unknown.prefix(64))'")
        }
        let limit = params["limit"] == nil ? 100 : Params.int(params["limit"]).map(Int.init) ?? -1
        guard (1...1000).contains(limit) else {
            throw Failure(code: .invalidParams, message: "params.limit must be 1…1000")
        }
        let state = params["state"] as? String
        if params["state"] != nil {
            guard let state, RotationState(rawValue: state) != nil || MemberState(rawValue: state) != nil else {
                throw Failure(
                    code: .invalidParams,
                    message: "params.state must be a rotation state (or waiting/cancelled with campaign)")
            }
        }
        let holding = params["holding"] as? String
        if params["holding"] != nil, !(holding.map(Hex.isSHA256) ?? false) {
            throw Failure(code: .invalidParams, message: "params.holding must be a sha256 (64 lowercase hex digits)")
        }
        let expiringBefore = Params.int(params["expiringBefore"])
        if params["expiringBefore"] != nil, expiringBefore == nil {
            throw Failure(code: .invalidParams, message: "params.expiringBefore must be a Unix time in seconds")
        }
        let tag = Params.int(params["tag"])
        if params["tag"] != nil, tag == nil || expiringBefore == nil {
            throw Failure(code: .invalidParams, message: "params.tag must be a sec tag, given with expiringBefore")
        }
        if state == MemberState.waiting.rawValue, params["campaign"] == nil {
            throw Failure(code: .invalidParams, message: "params.state waiting needs params.campaign")
        }
        let campaignID = params["campaign"] as? String
        if params["campaign"] != nil {
            guard let campaignID, context.campaignIDs.contains(campaignID) else {
                throw Failure(
                    code: .unknownCampaign,
                    message: "no campaign '\(String(describing: params["campaign"]!).prefix(80))'")
            }
        }
        var after = params["after"] as? String
        if params["after"] != nil, after == nil {
            throw Failure(code: .invalidParams, message: "params.after must be a device ID")
        }

        var found: [[String: Any]] = []
        var scanned = 0
        var exhausted = false
        // A bounded cost per call, whatever the filter: at most `scanBudget` devices looked at and `timeBudget`
        // spent; the cursor then lets the caller go on (a page may come back short, or empty, with `next` set).
        let started = ContinuousClock.now
        while found.count < limit, scanned < scanBudget, ContinuousClock.now - started < timeBudget {
            var page: [(DeviceRecord?, CampaignMember?)] = []
            if let campaignID {
                let memberState = state.flatMap(MemberState.init(rawValue:))
                let members = try tx.members(
                    campaign: campaignID, maxWave: nil, state: memberState, after: after, limit: 500)
                page = try members.prefix(scanBudget - scanned).map { (try tx.device($0.device), $0) }
                after = members.prefix(scanBudget - scanned).last?.device
            } else {
                let devices = try tx.devices(after: after, limit: min(500, scanBudget - scanned))
                page = devices.map { ($0, nil) }
                after = devices.last?.id
            }
            if page.isEmpty {
                exhausted = true
                break
            }
            for (device, member) in page {
                scanned += 1
                after = device?.id ?? member?.device ?? after
                guard let device else { continue }
                let rotations = try tx.rotations(device: device.id)
                if let state, campaignID == nil, !rotations.contains(where: { $0.state.rawValue == state }) { continue }
                if let holding, !(device.inventory?.creds.contains { $0.sha256 == holding } ?? false) { continue }
                if let expiringBefore {
                    let dates = (device.inventory?.creds ?? []).filter { tag == nil || $0.tag == tag }
                        .compactMap { $0.notAfter ?? context.catalogue[$0.sha256]?.notAfter }
                    guard let soonest = dates.min(), soonest < expiringBefore else { continue }
                }
                var entry: [String: Any] = [
                    "device": device.id, "lastSeen": device.lastSeen, "issuedSeq": device.issuedSeq,
                    "rotations": Dictionary(
                        rotations.map { ($0.target.description, $0.state.rawValue) }, uniquingKeysWith: { a, _ in a }),
                ]
                entry["reportedSeq"] = device.inventory?.seq
                if let member {
                    entry["campaign"] =
                        ["id": member.campaign, "wave": member.wave, "state": member.state.rawValue] as [String: Any]
                }
                found.append(entry)
                if found.count == limit { break }
            }
        }
        var result: [String: Any] = ["devices": found]
        // The cursor: the last device returned (or scanned, when a page filtered everything out).
        let cursor = found.count == limit ? found.last?["device"] as? String : (exhausted ? nil : after)
        result["next"] = cursor ?? NSNull()
        return result
    }

}

import CertrotCore
import Foundation

extension RPC {
    /// Devices one device.list call looks at, at most, and the time it may take: an unauthenticated read must cost
    /// the daemon little whatever its filter (without them, one that matches nothing scans the whole fleet: ~1 s at
    /// 20,000 devices).
    static let scanBudget = 2000
    static let timeBudget = Duration.milliseconds(100)

    /// device.list: devices filtered by rotation state, campaign (and member state), digest held, expiry;
    /// `limit` (≤ 1000, default 100) per page, `after` the last ID of the previous page.
    static func deviceList(
        _ params: DeviceList.Params, context: Context, tx: any StoreTransaction
    ) throws -> DeviceList.Result {
        let (limit, state, holding, expiringBefore, tag) = (
            params.limit, params.state, params.holding, params.expiringBefore, params.tag
        )
        let campaignID = params.campaign
        if let campaignID, !context.campaignIDs.contains(campaignID) {
            throw RPCError(code: .unknownCampaign, message: "no campaign '\(campaignID.prefix(80))'")
        }
        var after = params.after
        // With a prefix the scan starts at the prefix (the device named by it first, if one is) and ends at the
        // first ID past the devices that have it: IDs are in byte order.
        var first: DeviceRecord?
        if let prefix = params.prefix, after.map({ Array($0.utf8).lexicographicallyPrecedes(prefix.utf8) }) ?? true {
            if campaignID == nil { first = try tx.device(prefix) }
            after = prefix
        }
        func outside(_ id: String) -> Bool {
            params.prefix.map { !id.utf8.starts(with: $0.utf8) } ?? false
        }

        var found: [DeviceList.Result.Entry] = []
        var scanned = 0
        var exhausted = false
        // A bounded cost per call, whatever the filter: at most `scanBudget` devices looked at and `timeBudget`
        // spent; the cursor then lets the caller go on (a page may come back short, or empty, with `next` set).
        let started = ContinuousClock.now
        while found.count < limit, scanned < scanBudget, !exhausted, ContinuousClock.now - started < timeBudget {
            var page: [(DeviceRecord?, CampaignMember?)] = []
            if let campaignID {
                let memberState = state.flatMap(MemberState.init(rawValue:))
                let members = try tx.members(
                    campaign: campaignID, maxWave: nil, state: memberState, after: after, limit: 500)
                page = try members.prefix(scanBudget - scanned).map { (try tx.device($0.device), $0) }
                after = members.prefix(scanBudget - scanned).last?.device
            } else {
                var devices = try tx.devices(after: after, limit: min(500, scanBudget - scanned))
                if let device = first {
                    devices.insert(device, at: 0)
                    first = nil
                }
                page = devices.map { ($0, nil) }
                after = devices.last?.id
            }
            if page.isEmpty {
                exhausted = true
                break
            }
            for (device, member) in page {
                if outside(device?.id ?? member?.device ?? "") {
                    exhausted = true
                    break
                }
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
                var entry = DeviceList.Result.Entry(
                    device: device.id, lastSeen: device.lastSeen, issuedSeq: device.issuedSeq,
                    reportedSeq: device.inventory?.seq,
                    rotations: Dictionary(
                        rotations.map { ($0.target.description, $0.state.rawValue) }, uniquingKeysWith: { a, _ in a }),
                    campaign: member.map {
                        DeviceList.Result.Member(id: $0.campaign, wave: $0.wave, state: $0.state.rawValue)
                    })
                entry.clientCertificate = try ClientIdentityStatus.of(
                    inventory: device.inventory, issued: { try tx.issued(device: device.id) },
                    policies: context.clientCertPolicies.map(\.policy), now: context.now)
                found.append(entry)
                if found.count == limit { break }
            }
        }
        // The cursor: the last device returned (or scanned, when a page filtered everything out).
        let cursor = found.count == limit ? found.last?.device : (exhausted ? nil : after)
        return DeviceList.Result(devices: found, next: cursor)
    }

}

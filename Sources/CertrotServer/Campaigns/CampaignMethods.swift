import CertrotCore
import Foundation
import Logging

/// The campaign JSON-RPC methods.
extension Engine {
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
    func transition<T>(_ body: () throws(CampaignStateError) -> T) throws(RPC.Failure) -> T {
        do {
            return try body()
        } catch {
            throw RPC.Failure(code: .campaignState, message: error.message)
        }
    }

    func changed(_ campaign: Campaign, tx: any StoreTransaction) throws {
        var campaign = campaign
        campaign.updatedAt = clock()
        try store(campaign, tx: tx)
        lastStatus[campaign.id] = nil
        logger.notice(
            "campaign \(campaign.state.rawValue)",
            metadata: ["campaign": "\(campaign.id)", "reason": "\(campaign.reason ?? "-")"])
    }

    func campaign(_ params: [String: Any]) throws(RPC.Failure) -> Campaign {
        guard let id = params["id"] as? String, !id.isEmpty else {
            throw RPC.Failure(code: .invalidParams, message: "params.id (a campaign id) is required")
        }
        guard let campaign = campaigns[id] else {
            throw RPC.Failure(code: .unknownCampaign, message: "no campaign '\(id.prefix(80))'")
        }
        return campaign
    }

    func reasonParam(_ params: [String: Any]) throws(RPC.Failure) -> String? {
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

import CertrotCore
import Foundation
import Logging

/// The campaign JSON-RPC methods (typed in `RPC/Methods/CampaignRPC.swift`).
extension Engine {
    /// The campaign methods, dispatched from ``RPC/handle``; nil for a method that is not one of them.
    func campaignMethod(_ method: String, params: [String: Any], tx: any StoreTransaction) throws -> RPC.HandlerResult?
    {
        switch method {
        case CampaignCreate.name:
            return .deferred
        case CampaignList.name:
            return .value(try RPC.encode(list(CampaignList.params(params), tx: tx)))
        case CampaignStatus.name:
            return .value(try RPC.encode(status(try campaign(CampaignStatus.params(params)), tx: tx)))
        case CampaignPause.name:
            return .value(try RPC.encode(pause(CampaignPause.params(params), tx: tx)))
        case CampaignResume.name:
            return .value(try RPC.encode(resume(CampaignResume.params(params), tx: tx)))
        case CampaignAbort.name:
            return .value(try RPC.encode(abort(CampaignAbort.params(params), tx: tx)))
        default:
            return nil
        }
    }

    func list(_ params: CampaignList.Params, tx: any StoreTransaction) throws -> CampaignList.Result {
        var list: [CampaignList.Result.Summary] = []
        for campaign in campaigns.values.sorted(by: { $0.precedence < $1.precedence })
        where params.state == nil || campaign.state == params.state {
            var total = WaveCounts()
            for counted in try tx.memberCounts(campaign: campaign.id).values {
                for (state, n) in counted.states { total.states[state, default: 0] += n }
            }
            list.append(
                CampaignList.Result.Summary(
                    id: campaign.id, name: campaign.name, state: campaign.state.rawValue, origin: campaign.origin,
                    createdAt: campaign.createdAt, total: total.size, states: Self.stateCounts(total),
                    currentWave: campaign.currentWave, waves: campaign.waveCount, reason: campaign.reason))
        }
        return CampaignList.Result(campaigns: list)
    }

    func pause(_ params: CampaignRef, tx: any StoreTransaction) throws -> CampaignPause.Result {
        let reason = "paused by an operator" + params.reason.map { ": \($0)" }.orEmpty
        let campaign = try operate(params, tx: tx) { campaign, _ throws(CampaignStateError) in
            try campaign.pause(reason: reason)
            return []
        }
        return CampaignPause.Result(id: campaign.id, state: campaign.state.rawValue)
    }

    func resume(_ params: CampaignRef, tx: any StoreTransaction) throws -> CampaignResume.Result {
        let current = try campaign(params)
        // Accepting a threshold pause takes the wave's counts as they are now.
        let counts =
            current.awaitingConfirmation
            ? WaveCounts() : try tx.memberCounts(campaign: current.id)[current.currentWave] ?? WaveCounts()
        let campaign = try operate(params, tx: tx) { campaign, now throws(CampaignStateError) in
            try campaign.resume(currentWave: counts, now: now)
        }
        return CampaignResume.Result(id: campaign.id, state: campaign.state.rawValue, currentWave: campaign.currentWave)
    }

    func abort(_ params: CampaignRef, tx: any StoreTransaction) throws -> CampaignAbort.Result {
        let reason = "aborted by an operator" + params.reason.map { ": \($0)" }.orEmpty
        let campaign = try operate(params, tx: tx) { campaign, now throws(CampaignStateError) in
            try campaign.abort(reason: reason, now: now)
        }
        let cancelled = try tx.memberCounts(campaign: campaign.id).values.reduce(0) { $0 + $1.cancelled }
        return CampaignAbort.Result(id: campaign.id, state: campaign.state.rawValue, cancelled: cancelled)
    }

    /// An operator's transition of the campaign `ref` names: decided by the core (a transition its state does not
    /// allow is the request's error), its actions carried out, the campaign stored.
    private func operate(
        _ ref: CampaignRef, tx: any StoreTransaction,
        _ transition: (inout Campaign, Int64) throws(CampaignStateError) -> [CampaignAction]
    ) throws -> Campaign {
        var campaign = try campaign(ref)
        let now = clock()
        let actions: [CampaignAction]
        do {
            actions = try transition(&campaign, now)
        } catch {
            throw RPCError(code: .campaignState, message: error.message)
        }
        var none: [Outbound] = []
        try carryOut(actions, for: &campaign, tx: tx, outbox: &none)
        try changed(campaign, tx: tx)
        return campaign
    }

    func changed(_ campaign: Campaign, tx: any StoreTransaction) throws {
        var campaign = campaign
        campaign.updatedAt = clock()
        try store(campaign, tx: tx)
        registry.lastStatus[campaign.id] = nil
        logger.notice(
            "campaign \(campaign.state.rawValue)",
            metadata: ["campaign": "\(campaign.id)", "reason": "\(campaign.reason ?? "-")"])
    }

    func campaign(_ ref: CampaignRef) throws(RPCError) -> Campaign {
        guard let campaign = campaigns[ref.id] else {
            throw RPCError(code: .unknownCampaign, message: "no campaign '\(ref.id.prefix(80))'")
        }
        return campaign
    }

    /// Answers a deferred campaign.create once its checks have run.
    func answer(_ request: RPC.Deferred) async {
        let result: Result<RPC.EncodedResult, RPCError>
        do {
            let campaign = try await createCampaign(
                params: request.params, origin: "rpc", signedBy: request.signedBy, token: request.local?.token)
            if let who = request.signedBy ?? request.local?.token {
                logger.notice(
                    "operator request",
                    metadata: ["method": "campaign.create", "operator": "\(who)", "campaign": "\(campaign.id)"])
            }
            let total = try store.read { tx in
                try tx.memberCounts(campaign: campaign.id).values.reduce(0) { $0 + $1.size }
            }
            result = .success(
                try RPC.encode(
                    CampaignCreate.Result(
                        id: campaign.id, devices: total, waves: campaign.waveCount, state: campaign.state.rawValue)))
        } catch let refusal as Refusal {
            logger.notice(
                "campaign refused", metadata: ["reason": "\(refusal.reason)", "message": "\(refusal.message)"])
            result = .failure(RPCError(refusal))
            let now = clock()
            try? leaderWrite { tx in
                try RPC.auditRequest(
                    method: CampaignCreate.name, signedBy: request.signedBy, names: operatorNames,
                    token: request.local?.token, params: request.params,
                    result: "refused \(refusal.reason)", at: now, tx: tx)
            }
        } catch let failure as RPCError {
            result = .failure(failure)
        } catch {
            logger.error("campaign.create failed", metadata: ["error": "\(error)"])
            result = .failure(.internalFailure)
        }
        if let reply = RPC.reply(to: request, result: result, drops: drops) { enqueue(reply) }
    }
}

extension Optional where Wrapped == String {
    var orEmpty: String { self ?? "" }
}

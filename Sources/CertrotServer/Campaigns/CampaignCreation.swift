import CertrotCore
import Foundation
import Logging

/// campaign.create: the never-brick preflight, then members and waves stored in one transaction.
extension Engine {
    // MARK: Creation

    /// campaign.create: parse, resolve chains, run the never-brick preflight, select devices, cut waves, store.
    /// `signedBy`: the operator key of the request (origin `rpc`); the audit log records who asked.
    /// `token`: the name of the HTTP token of a request made over the HTTP API.
    func createCampaign(
        params: [String: Any], origin: String, signedBy: String? = nil, token: String? = nil
    ) async throws -> Campaign {
        let now = clock()
        let date = Date(timeIntervalSince1970: Double(now))
        let request = try CampaignRequest.parse(params, now: now)
        if let same = campaigns.values.first(where: { $0.name == request.name && !$0.state.isFinal }) {
            throw Refusal(
                "duplicate_name", "a campaign named '\(request.name)' is already \(same.state.rawValue) (\(same.id))",
                details: ["campaign": .string(same.id)])
        }
        if let name = request.clientCert, clientCerts.byName[name] == nil {
            throw Refusal(
                "unknown_client_cert", "'\(name)' is not a clientCerts policy",
                details: ["clientCert": .string(name)])
        }
        // 1. Every chain parses, is valid long enough, is a CA, fits.
        var chains: [CertificateChain] = []
        for (index, target) in request.targets.enumerated() {
            let what = "targets[\(index)] (tag \(target.tag))"
            var pem = target.chain
            if let name = target.credential {
                guard let chain = catalogue.named(name, targets: targetsByName) else {
                    throw Refusal(
                        "unknown_credential", "\(what): '\(name)' is neither in the catalogue nor a configured target",
                        details: ["what": .string(what), "credential": .string(name)])
                }
                pem = chain.pem
            }
            chains.append(
                try Preflight.checkChain(
                    pem ?? "", type: target.type, profile: profile, now: date,
                    minRemainingValidity: request.minRemainingValidity, what: what))
        }
        // 2. Who is in it.
        var selected: [DeviceRecord] = try store.read { tx in try select(request.select, now: now, tx: tx) }
        if let name = request.clientCert, let policy = clientCerts.byName[name] {
            // Only devices that can generate a key in a standby tag: those reporting one of the policy's tags active.
            selected = selected.filter { $0.inventory?.active.map(policy.tags.contains) ?? false }
            if selected.isEmpty, !request.policy.continuous {
                throw Refusal(
                    "empty_selection",
                    "the selection \(request.select.json) matches no device reporting an active tag of policy \(name)")
            }
        }
        if selected.isEmpty, !request.policy.continuous {
            throw Refusal("empty_selection", "the selection \(request.select.json) matches no known device")
        }
        // 3. overlap: compose per chain held now; every result must fit.
        var targets: [CampaignTarget] = []
        for (index, target) in request.targets.enumerated() {
            let what = "targets[\(index)] (tag \(target.tag))"
            var resolved = CampaignTarget(
                tag: target.tag, type: target.type, strategy: target.strategy, pem: chains[index].pem,
                credential: target.credential)
            if target.strategy == .overlap {
                var holders: [String: Int] = [:]
                for device in selected {
                    guard let held = device.inventory?.credential(tag: target.tag, type: target.type)?.sha256,
                        held != resolved.sha256
                    else { continue }
                    holders[held, default: 0] += 1
                }
                for (held, count) in holders.sorted(by: { $0.key < $1.key }) {
                    guard let current = catalogue.known[held]?.chain else {
                        throw Refusal(
                            "unknown_current_chain",
                            "\(what): overlap needs the chain \(count) selected device(s) hold now (sha256 \(held)), "
                                + "which certrot does not know; add it to the config's catalogue, or use replace",
                            details: ["what": .string(what), "held": .string(held), "devices": .int(Int64(count))])
                    }
                    let composed = Preflight.overlap(new: chains[index], current: current, now: date)
                    try Preflight.checkOverlapSize(composed, held: held, profile: profile, what: what)
                    resolved.overlaps[held] = composed.pem
                }
            }
            targets.append(resolved)
        }
        // 4. Never brick: the endpoint must chain to roots each device will hold afterwards.
        if let endpoint = request.endpointChain {
            for (index, target) in targets.enumerated() where target.type == CredentialType.rootCAChain.rawValue {
                let what = "targets[\(index)] (tag \(target.tag))"
                var rootSets: [String] = [target.pem]
                rootSets += target.overlaps.keys.sorted().compactMap { target.overlaps[$0] }
                for pem in rootSets {
                    let roots = (try? PEM.normalizeChain(pem))?.certificates ?? []
                    try await Preflight.checkEndpoint(endpoint, roots: roots, now: date, limit: 4096, what: what)
                }
            }
        }
        // 5. Waves: devices in a stable pseudo-random order, so that canaries are spread over the fleet.
        var campaign = Campaign(
            id: "cmp-" + String(Engine.newJTI().prefix(10)), name: request.name, now: now, targets: targets,
            select: request.select, policy: request.policy, origin: origin)
        campaign.clientCert = request.clientCert
        campaign.sequence = registry.nextSequence
        campaign.schedule(now: now)
        let order = selected.map { (Hex.sha256(Array("\(campaign.id)\n\($0.id)".utf8)), $0.id) }.sorted { $0.0 < $1.0 }
        let ends = WaveSpec.cumulativeSizes(request.policy.waves, total: order.count)
        campaign.setWaveCount(ends.count)
        try leaderWrite { tx in
            var wave = 0
            for (position, (_, device)) in order.enumerated() {
                while position >= ends[wave] { wave += 1 }
                try tx.saveMember(
                    CampaignMember(
                        campaign: campaign.id, device: device, wave: wave, state: .waiting, settled: false, reason: nil,
                        updatedAt: now))
            }
            try store(campaign, tx: tx)
            try RPC.auditRequest(
                method: CampaignCreate.name, signedBy: signedBy, names: operatorNames,
                origin: origin == "rpc" ? nil : origin, token: token, params: params,
                result: "ok \(campaign.id)", at: now, tx: tx)
        }
        logger.notice(
            "campaign created",
            metadata: [
                "campaign": "\(campaign.id)", "name": "\(campaign.name)", "devices": "\(order.count)",
                "waves": "\(ends)", "origin": "\(origin)",
            ])
        return campaign
    }

    func select(_ selection: CampaignSelection, now: Int64, tx: any StoreTransaction) throws -> [DeviceRecord] {
        if case .devices(let ids) = selection {
            return try Set(ids.map(DeviceKey.init)).sorted().compactMap { try tx.device($0.id) }.filter {
                $0.inventory != nil
            }
        }
        var result: [DeviceRecord] = []
        var after: String?
        while true {
            let page = try tx.devices(after: after, limit: 2000)
            guard let last = page.last else { break }
            for device in page where device.inventory != nil {
                if selection.matches(
                    device: device.id, inventory: device.inventory, now: now,
                    expiry: { self.catalogue.expiry(of: device.inventory, tag: $0) })
                {
                    result.append(device)
                }
            }
            after = last.id
        }
        return result
    }
}
